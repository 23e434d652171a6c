r"""Compression sweep: test loss over a (memory size x training steps) grid, with iso-loss contours.

  python -m experiments.compress --config=configs/copy.py:small --mem_dims=1,2,4,8,16 \
      [--steps=1000] [--num_evals=10] [--metric=loss_dec_test] [--seeds=3] [--out=workdirs/compress_copy] \
      [--lanes=2]

One SMT run per memory token width d (memory size Z = K*d with K = config.model.num_mem_tokens), each
evaluated --num_evals times while it trains. Writes OUT/compression.{json,md,png}; runs go to OUT/Z<size>
(OUT/Z<size>/seed<s> with --seeds > 1: each cell is then the mean over seeds, with a 95% t-interval in the
table), two trained at a time, each pinned to its own core (--lanes; 0 trains in this process), and a rerun
reuses them. Any --config.* override applies to every run. See smtjax/studies/compression.py.
"""

from absl import flags
from etils import epath
from ml_collections import config_flags

from experiments import _cli
from smtjax.studies import compression

FLAGS = flags.FLAGS
_cli.define_config('Config file (e.g. configs/copy.py:small).')
flags.DEFINE_list('mem_dims', ['1', '2', '4', '8', '16'], 'Memory token widths d to sweep.')
flags.DEFINE_integer('steps', None, 'Training steps per run (default: the config\'s num_steps).')
flags.DEFINE_integer('num_evals', 10, 'Evaluations per run (the steps axis).')
flags.DEFINE_string('metric', 'loss_dec_test', 'Evaluation metric drawn (any *_test or rnn_only_/teacher_ metric).')
flags.DEFINE_integer('seeds', 1, 'Seeds per memory size (config.seed + 0..seeds-1): mean and 95% interval.')
_cli.define_study_flags('compress')
flags.mark_flags_as_required(['config'])


def main(argv):
  _cli.start(argv)
  with _cli.user_errors():
    result = compression.run_compression(FLAGS.config, [int(d) for d in FLAGS.mem_dims], FLAGS.out, FLAGS.steps,
                                         FLAGS.num_evals, FLAGS.metric,
                                         config_name=config_flags.get_config_filename(FLAGS['config']),
                                         seeds=FLAGS.seeds, lanes=FLAGS.lanes)
  print((epath.Path(FLAGS.out) / 'compression.md').read_text())
  print(f'wrote {FLAGS.out}/compression.json, compression.md and compression.png ({result["metric"]})')


if __name__ == '__main__':
  _cli.run(main)
