r"""SMT's nonlinear RNNs against linear RNNs trained by parallel scan, at equal wall clock, per task.

  python -m experiments.linear_rnns --tasks=parity,counting,stack,retrieval --variant=small \
      --budget_seconds=60 --seeds=3 --out=workdirs/linear_rnns [--lanes=2] [--test_multiples=2,4]

For each task (configs/<task>.py:<variant>, parallel SMT): SMT (drift-robust, chosen on the validation split)
and SMT->DMT with the Transformer cell and the GRU, BPTT with the GRU and the LSTM, parallel-scan BPTT with
minGRU and the LRU, every method for the same wall clock (step times calibrated on one core, runs in pinned
parallel lanes). Writes OUT/linear_rnns.{json,md,png}: accuracy at T and at each multiple of T, seconds per
step, and accuracy against wall clock. A rerun skips finished runs. See smtjax/studies/linear_rnns.py.
"""

from absl import app, flags

from experiments import _cli
from smtjax import config as config_lib
from smtjax.studies import linear_rnns

FLAGS = flags.FLAGS
flags.DEFINE_list('tasks', ['parity', 'counting', 'stack', 'retrieval'], 'Task config files (configs/<task>.py).')
flags.DEFINE_string('variant', 'small', 'The variant of every task config.')
flags.DEFINE_float('budget_seconds', 60.0, 'Wall clock per method, task and seed, in seconds of one CPU core.')
flags.DEFINE_integer('seeds', 3, 'Seeds 0..seeds-1: mean and 95% interval.')
flags.DEFINE_list('lrs', ['3e-4', '1e-3'], 'Learning rates every method is tuned over on the validation split '
                  '(crossed with its own candidates; empty: none tuned).')
_cli.define_study_flags('linear_rnns')
flags.DEFINE_list('test_multiples', ['2', '4'], 'Also score sequences these many times the training length.')
flags.DEFINE_integer('num_eval_batches', 8, 'Held-out batches each run is scored on.')


def main(argv):
  _cli.start(argv)
  with _cli.user_errors():
    configs = {t: config_lib.load_config(f'configs/{t}.py:{FLAGS.variant}') for t in FLAGS.tasks}
    plan = linear_rnns.Plan(budget_s=FLAGS.budget_seconds, seeds=tuple(range(FLAGS.seeds)), lanes=FLAGS.lanes,
                            lrs=tuple(float(v) for v in FLAGS.lrs),
                            test_multiples=tuple(int(k) for k in FLAGS.test_multiples),
                            num_eval_batches=FLAGS.num_eval_batches)
    summaries = linear_rnns.run_comparison(configs, plan, FLAGS.out)
  print(linear_rnns.write_table(summaries, f'{FLAGS.out}/linear_rnns.md'))
  print(f'wrote {FLAGS.out}/linear_rnns.json, .md, .png')


if __name__ == '__main__':
  app.run(main)
