r"""Real data at equal wall clock: SMT, SMT->DMT, drift-robust SMT, BPTT (Transformer cell) and BPTT (GRU).

  python -m experiments.realdata --config=configs/tinystories.py:cpu --budget_minutes=10 --seeds=3 \
      --out=workdirs/realdata [--dmt_share=0.25] [--lanes=2] [--drift=roll4:rollout_steps=4 ...]

Times every method's step on one core, chooses the drift-robust SMT setting on the validation split, then
gives every method the same wall clock (as a number of steps) and trains them `--lanes` at a time, each
process on its own core. Writes OUT/realdata_NAME.{json,md} (held-out bits per token at T and at 2T, mean and
95% interval over seeds), OUT/curves_NAME.png (loss against wall clock), OUT/positions_NAME.png (loss by
position), OUT/samples_NAME.md (+ .png grids for images). A rerun skips finished runs. See
smtjax/studies/realdata.py.
"""

from absl import flags
from ml_collections import config_flags

from experiments import _cli
from smtjax.studies import realdata

FLAGS = flags.FLAGS
_cli.define_config('Config file and variant (e.g. configs/tinystories.py:cpu).')
flags.DEFINE_float('budget_minutes', 10.0, 'Wall clock per method and seed, in minutes of one CPU core.')
flags.DEFINE_integer('seeds', 3, 'Seeds (config.seed + 0..seeds-1): mean and 95% interval.')
flags.DEFINE_float('dmt_share', 0.25, 'Share of SMT->DMT\'s budget that DMT gets.')
flags.DEFINE_float('select_share', 0.5, 'Share of the budget each drift-robust candidate trains for.')
flags.DEFINE_multi_string('drift', None, 'NAME:key=value,... config.smt overrides of a drift-robust candidate '
                          '(repeatable; default: roll4, roll4_dec, noise1).')
flags.DEFINE_list('lrs', ['3e-4', '1e-3'], 'Learning rates every method is tuned over on the validation split '
                  '(crossed with its own candidates; empty: none tuned).')
_cli.define_study_flags('realdata')
flags.DEFINE_integer('num_eval_batches', 16, 'Held-out batches each run is scored on.')
flags.DEFINE_list('test_multiples', ['2'], 'Also score sequences these many times the training length.')
flags.mark_flags_as_required(['config'])


def _drift_grid():
  if not FLAGS.drift:
    return realdata.Plan(1.0, (0,)).drift_grid
  return tuple((name, tuple(opts.items())) for name, opts in map(_cli.parse_variant, FLAGS.drift))


def main(argv):
  _cli.start(argv)
  config = FLAGS.config
  with _cli.user_errors():
    plan = realdata.Plan(budget_s=60.0 * FLAGS.budget_minutes, seeds=tuple(config.seed + i for i in range(FLAGS.seeds)),
                         dmt_share=FLAGS.dmt_share, select_share=FLAGS.select_share, drift_grid=_drift_grid(),
                         lanes=FLAGS.lanes, lrs=tuple(float(v) for v in FLAGS.lrs),
                         num_eval_batches=FLAGS.num_eval_batches,
                         test_multiples=tuple(int(k) for k in FLAGS.test_multiples))
    name = config_flags.get_config_filename(FLAGS['config']).split('/')[-1].replace('.py', '').replace(':', '_')
    summary = realdata.run_study(config, plan, FLAGS.out, name)
  print(realdata.write_table(summary, f'{FLAGS.out}/realdata_{summary["name"]}.md'))
  print(f'wrote {FLAGS.out}/realdata_{summary["name"]}.json, curves_, positions_ and samples_ files '
        f'({summary["study_seconds"] / 60:.0f} min)')


if __name__ == '__main__':
  _cli.run(main)
