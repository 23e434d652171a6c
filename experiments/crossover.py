r"""SMT, SMT->DMT and tuned BPTT against sequence length at equal wall clock: where does SMT overtake BPTT?

  python -m experiments.crossover --configs=retrieval,copy,stack,keys_values,modular,parity,counting,counting:sparse \
      --variant=small --lengths=8,16,32,64,128 --budget_seconds=60 --seeds=3 --out=workdirs/crossover

Each config is configs/<name>.py:<variant>[,<extra>] (e.g. counting:sparse: one target per sequence, against
counting's target at every step). Every method is tuned once per task (learning rate; SMT's drift-robust
setting; BPTT's cell) on the validation split at --tune_at (default: the middle length), then trained at every
length for the same wall clock per run. Writes OUT/crossover.{json,md} and OUT/crossover_<task>.png. A rerun
skips finished runs. See smtjax/studies/crossover.py.
"""

from absl import app, flags

from experiments import _cli
from smtjax.studies import crossover

FLAGS = flags.FLAGS
flags.DEFINE_list('configs', ['retrieval', 'copy', 'stack', 'keys_values', 'modular', 'parity', 'counting',
                              'counting:sparse'], 'Task configs: NAME or NAME:EXTRA (configs/NAME.py:VARIANT,EXTRA).')
flags.DEFINE_string('variant', 'small', 'The variant of every config.')
flags.DEFINE_list('lengths', ['8', '16', '32', '64', '128'], 'Sequence lengths T (keys_values: numbers of pairs).')
flags.DEFINE_integer('tune_at', None, 'The length each method is tuned at (default: the middle one).')
flags.DEFINE_float('budget_seconds', 60.0, 'Wall clock per run, in seconds of one CPU core.')
flags.DEFINE_integer('seeds', 3, 'Seeds 0..seeds-1: mean and 95% interval.')
_cli.define_study_flags('crossover')
flags.DEFINE_integer('num_eval_batches', 8, 'Held-out batches each run is scored on.')


def main(argv):
  _cli.start(argv)
  with _cli.user_errors():
    plan = crossover.Plan(budget_s=FLAGS.budget_seconds, seeds=tuple(range(FLAGS.seeds)), lanes=FLAGS.lanes,
                          test_multiples=(), num_eval_batches=FLAGS.num_eval_batches, select_by='accuracy')
    result = crossover.run_crossover(_cli.configs_of(FLAGS.configs, FLAGS.variant), FLAGS.lengths, plan, FLAGS.out,
                                     FLAGS.tune_at)
  print(crossover.write_table(result, f'{FLAGS.out}/crossover.md'))


if __name__ == '__main__':
  app.run(main)
