r"""Kill-and-resume soak: N times start a training run, SIGKILL it at a random moment (in start-up, mid-
training, or while a checkpoint is being written), and start it again; at the end the parameters and every
logged metric must equal an uninterrupted run's, with no duplicate or missing metric step.

  python -m experiments.soak --kills=10 --out=/tmp/soak      # tiny retrieval model, about 2 minutes on CPU

Writes out/reference (the uninterrupted run), out/run (the killed one), out/launch-<i>.log and
out/soak.json; exits 1 unless the two runs agree.
"""

from absl import app, flags

from experiments import _cli
from smtjax import soak

FLAGS = flags.FLAGS
flags.DEFINE_integer('kills', 10, 'Number of SIGKILLs (each followed by a resume).')
flags.DEFINE_integer('seed', 0, 'Seed of the kill schedule.')
flags.DEFINE_integer('num_steps', 0, 'Training steps (0: 8*kills + 20).')
flags.DEFINE_integer('checkpoint_every', 3, 'Checkpoint interval in steps (small: many saves to kill).')
flags.DEFINE_string('config', 'configs/retrieval.py:small', 'Config file (with variant) to train.')
flags.DEFINE_multi_string('override', [], 'Extra --config.x=y arguments for the runs, e.g. '
                          '--override=--config.seed=1.')
flags.DEFINE_string('out', '/tmp/smtjax_soak', 'Output directory (replaced).')


def main(argv):
  _cli.start(argv)
  s = soak.soak(FLAGS.out, FLAGS.kills, FLAGS.seed, FLAGS.num_steps, FLAGS.checkpoint_every, config=FLAGS.config,
                overrides=tuple(FLAGS.override))
  if not s['identical']:
    raise SystemExit(1)


if __name__ == '__main__':
  app.run(main)
