r"""The teacher's ceiling: teacher and RNN accuracy against memory size (K, width), coef_dyn and steps.

  python -m experiments.ceiling --configs=copy,counting --variant=small --seeds=3 --out=workdirs/ceiling

For each task (configs/<name>.py:<variant>) every knob value is an SMT run of the config's steps; each is
scored by the teacher and by the RNN reading from its initial memory, with its step time as the cost. Writes
OUT/ceiling_<task>.{json,md,png}. A rerun skips finished runs. See smtjax/studies/ceiling.py.
"""

from absl import app, flags

from experiments import _cli
from smtjax.studies import ceiling

FLAGS = flags.FLAGS
flags.DEFINE_list('configs', ['copy', 'counting'], 'Task configs: NAME or NAME:EXTRA (configs/NAME.py:VARIANT).')
flags.DEFINE_string('variant', 'small', 'The variant of every config.')
flags.DEFINE_integer('seeds', 3, 'Seeds 0..seeds-1: mean and 95% interval.')
_cli.define_study_flags('ceiling')


def main(argv):
  _cli.start(argv)
  with _cli.user_errors():
    for task, config in _cli.configs_of(FLAGS.configs, FLAGS.variant).items():
      summary = ceiling.run_ceiling(config, f'{FLAGS.out}/{task}', tuple(range(FLAGS.seeds)), lanes=FLAGS.lanes,
                                    name=task)
      print(ceiling.write_table(summary, f'{FLAGS.out}/{task}/ceiling_{task}.md'))


if __name__ == '__main__':
  app.run(main)
