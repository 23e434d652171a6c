r"""SMT vs SMT->DMT vs BPTT across sequence lengths on a synthetic task (method.md §10).

  python -m experiments.compare --task=retrieval [--preset=cpu|gpu|tiny] [--lengths=8,16,32] \
      [--out=workdirs/compare] [--steps=300]

For every length: SMT (parallel mode), DMT fine-tuning from it, and BPTT with the same cell and the same
total number of steps; each RNN is scored reading whole held-out sequences from its initial memory, with
the SMT run's Transformer teacher as the upper bound. Writes OUT/compare_TASK.{json,md,png}; workdirs go
to OUT/TASK/T<length>/{smt,dmt,bptt} and a rerun skips finished runs. For keys_values, --lengths are
numbers of key/value pairs. See smtjax/compare.py.
"""

from absl import app, flags
from etils import epath

from experiments import _cli
from smtjax.studies import compare

FLAGS = flags.FLAGS
flags.DEFINE_enum('task', 'retrieval', list(compare.TASKS), 'Synthetic task (configs/<task>.py).')
flags.DEFINE_enum('preset', 'cpu', list(compare.PRESETS), "Sizes and lengths: 'cpu' (small configs, 2 CPU "
                  "cores), 'gpu' (the paper's lengths, gpu configs), 'tiny' (seconds, for tests).")
flags.DEFINE_list('lengths', None, 'Override the preset\'s lengths (keys_values: numbers of pairs).')
flags.DEFINE_string('out', 'workdirs/compare', 'Output directory.')
flags.DEFINE_integer('steps', None, 'Override the SMT step count (DMT gets steps // 3, BPTT their sum).')


def main(argv):
  _cli.start(argv)
  try:
    lengths = [int(x) for x in FLAGS.lengths] if FLAGS.lengths else None
  except ValueError:
    raise app.UsageError(f'--lengths must be a comma list of integers, got {FLAGS.lengths}')
  with _cli.user_errors():
    summary = compare.run_comparison(FLAGS.task, lengths, FLAGS.preset, FLAGS.out, FLAGS.steps)
  print((epath.Path(FLAGS.out) / f'compare_{FLAGS.task}.md').read_text())
  print(f'wrote {FLAGS.out}/compare_{FLAGS.task}.json, .md, .png ({len(summary["lengths"])} lengths)')


if __name__ == '__main__':
  app.run(main)
