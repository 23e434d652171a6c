r"""How many memories per sequence parallel SMT should decode, and how many transitions it should train: the
gradient's noise and the step time against smt.num_decoder_samples or smt.num_transitions.

  python -m experiments.bench_sampling --config=configs/retrieval.py:small [--field=num_decoder_samples] \
      [--samples=1,2,4,8,16,0] [--pretrain_steps=300] [--batches=8] [--draws=8]
  python -m experiments.bench_sampling --config=configs/tinystories.py:cpu --field=num_transitions \
      --samples=8,16,32,64,0

Trains the config's teacher for --pretrain_steps steps (with the config's own sampling), then,
for each count S of the --field (0 = all), computes the gradient of that loss term alone (the decoder loss, or
the dynamics loss) on --batches training batches x --draws sampling draws, and times the train step. Prints,
per S: the gradient variance (mean squared distance from the mean gradient, over batches and draws) relative
to taking all, the step time, and the efficiency (all's variance x step time over S's: above 1, S reaches a
given gradient noise in less time than taking all). The sampled losses are unbiased whatever S
(tests/test_losses.py), so S trades noise for time only.
"""

from absl import app, flags

from experiments import _cli, bench  # noqa: F401 -- bench defines --config, --steps and --repeats
from smtjax import benchmarks
from smtjax import config as config_lib

FLAGS = flags.FLAGS
flags.DEFINE_enum('field', 'num_decoder_samples', ['num_decoder_samples', 'num_transitions'],
                  'The config.smt count to vary.')
flags.DEFINE_list('samples', ['1', '2', '4', '8', '16', '0'], 'Values of --field per sequence (0 = all).')
flags.DEFINE_integer('pretrain_steps', 300, 'Teacher training steps before the gradients are measured.')
flags.DEFINE_integer('batches', 8, 'Training batches per measurement.')
flags.DEFINE_integer('draws', 8, 'Sampling draws per batch.')


def main(argv):
  _cli.start(argv)
  if FLAGS.config is None:
    raise app.UsageError('give --config')
  with _cli.user_errors():
    config_lib.validate(FLAGS.config)
  benchmarks.sampling_study(FLAGS.config, FLAGS.field, [int(s) for s in FLAGS.samples], FLAGS.pretrain_steps,
                            FLAGS.batches, FLAGS.draws, FLAGS.steps, FLAGS.repeats)


if __name__ == '__main__':
  app.run(main)
