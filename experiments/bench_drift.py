r"""Train-step time of plain SMT against its drift-robust variants, interleaved.

  python -m experiments.bench_drift --config=configs/retrieval.py:small [--rounds=7] [--steps=20] \
      [--variant=roll4_half:rollout_steps=4,num_transitions=8 ...]

Compiles the train step of plain SMT and of each variant (by default `smt.rollout_steps=4` and matched memory
noise, scale 3; `--variant=NAME:key=value,...` replaces them with `config.smt` overrides of your own), then
times --rounds rounds of --steps steps of each in turn, so that a changing machine load hits every variant
alike; prints the median step time and its ratio to plain SMT.
"""

from absl import flags

from experiments import _cli
from smtjax import benchmarks

FLAGS = flags.FLAGS
_cli.define_config('Config file (with optional :variant).')
flags.DEFINE_integer('rounds', 7, 'Interleaved timing rounds; the median is reported.')
flags.DEFINE_integer('steps', 20, 'Steps per round.')
flags.DEFINE_multi_string('variant', None, 'NAME:key=value,... of config.smt overrides (repeatable); '
                          'replaces the default variants.')
flags.mark_flags_as_required(['config'])


def main(argv):
  _cli.start(argv)
  # A bad variant or data file stops with one line naming it, before any compilation.
  with _cli.user_errors():
    overrides = dict(_cli.parse_variant(v) for v in FLAGS.variant) if FLAGS.variant else None
    benchmarks.drift_step_times(FLAGS.config, overrides, FLAGS.rounds, FLAGS.steps)


if __name__ == '__main__':
  _cli.run(main)
