r"""SMT vs SMT->DMT vs BPTT across sequence lengths and seeds on a synthetic task (method.md §10).

  python -m experiments.compare --config=configs/retrieval.py:small --lengths=8,12,16 --seeds=3 \
      --budget_seconds=60 [--test_lengths=2,4]      # tuned, at equal wall clock (crossover.py)

  python -m experiments.compare --config=configs/retrieval.py:small --lengths=8,12,16 [--seeds=3] \
      [--steps=1000] [--dmt_steps=200] [--methods=smt,dmt,bptt] [--test_lengths=2,4,8] \
      [--out=workdirs/compare] [--lanes=2] [--config.smt.rollout_steps=4 ...]

For every length and seed (config.seed + 0..seeds-1): SMT (the config, resized to the length), DMT
fine-tuning from it, and BPTT with the same cell and the same total number of steps; each RNN is scored
reading whole held-out sequences from its initial memory, with the SMT run's Transformer teacher as the
upper bound, and (--test_lengths=k,...) on sequences k times longer than it was trained on. Cells are the
mean and a 95% t-interval over seeds. Writes OUT/compare_TASK.{json,md,png}; workdirs go to
OUT/TASK/T<length>[/seed<s>]/{smt,dmt,bptt}, two trained at a time, each pinned to its own core (--lanes; 0 trains
in this process), and a rerun skips finished runs. For keys_values, --lengths are
numbers of key/value pairs. Any --config.* override applies to every run. See smtjax/studies/compare.py.
"""

from absl import app, flags
from etils import epath
from ml_collections import config_flags

from experiments import _cli
from smtjax.data import synthetic
from smtjax.studies import compare, crossover

FLAGS = flags.FLAGS
_cli.define_config('Config file and variant (e.g. configs/retrieval.py:small).')
flags.DEFINE_list('lengths', None, "Lengths to sweep (default: the config's; keys_values: numbers of pairs).")
_cli.define_study_flags('compare')
flags.DEFINE_integer('steps', None, "SMT steps (default: the config's num_steps).")
flags.DEFINE_integer('dmt_steps', None, 'DMT steps (default: SMT steps // 5); BPTT runs SMT + DMT steps.')
flags.DEFINE_integer('seeds', 1, 'Seeds per cell (config.seed + 0..seeds-1): mean and 95% interval.')
flags.DEFINE_list('methods', list(compare.METHODS), 'Which of smt, dmt, bptt to run (dmt needs smt).')
flags.DEFINE_list('test_lengths', [], 'Length generalization: also score every run at k * T for these k.')
flags.DEFINE_float('budget_seconds', None, 'Equal wall clock instead of equal steps: every method tuned on the '
                   'validation split (learning rate; SMT\'s drift-robust setting; BPTT\'s cell), then trained for '
                   'this many seconds of one CPU core per run (smtjax/studies/crossover.py).')
flags.mark_flags_as_required(['config'])


def _ints(name):
  try:
    return [int(x) for x in FLAGS[name].value] if FLAGS[name].value else None
  except ValueError:
    raise app.UsageError(f'--{name} must be a comma list of integers, got {FLAGS[name].value}') from None


def _tuned(lengths, test_lengths):
  """--budget_seconds: the tuned, equal-wall-clock comparison of this one config."""
  config = FLAGS.config
  lengths = lengths or [synthetic.swept_length(config.data)]
  plan = crossover.Plan(budget_s=FLAGS.budget_seconds, seeds=tuple(config.seed + i for i in range(FLAGS.seeds)),
                        lanes=FLAGS.lanes, test_multiples=tuple(test_lengths), select_by='accuracy')
  with _cli.user_errors():
    result = crossover.run_crossover({config.data.name: config}, lengths, plan, FLAGS.out)
  print(crossover.write_table(result, f'{FLAGS.out}/crossover.md'))


def main(argv):
  _cli.start(argv)
  lengths, test_lengths = _ints('lengths'), _ints('test_lengths') or []
  if FLAGS.budget_seconds is not None:
    return _tuned(lengths, test_lengths)
  with _cli.user_errors():
    summary = compare.run_comparison(FLAGS.config, lengths, FLAGS.out, FLAGS.steps, FLAGS.dmt_steps, FLAGS.seeds,
                                     FLAGS.methods, test_lengths,
                                     name=config_flags.get_config_filename(FLAGS['config']), lanes=FLAGS.lanes)
  task = summary['task']
  print((epath.Path(FLAGS.out) / f'compare_{task}.md').read_text())
  print(f'wrote {FLAGS.out}/compare_{task}.json, .md, .png ({len(summary["lengths"])} lengths, '
        f'{len(summary["seeds"])} seeds)')


if __name__ == '__main__':
  _cli.run(main)
