r"""Train-step time of plain SMT against its drift-robust variants, interleaved.

  python -m experiments.bench_drift --config=configs/retrieval.py:small [--rounds=7] [--steps=20] \
      [--variant=roll4_half:rollout_steps=4,num_transitions=8 ...]

Compiles the train step of plain SMT and of each variant (by default `smt.rollout_steps=4` and matched memory
noise, scale 3; `--variant=NAME:key=value,...` replaces them with `config.smt` overrides of your own), then
times --rounds rounds of --steps steps of each in turn, so that a changing machine load hits every variant
alike; prints the median step time and its ratio to plain SMT.
"""

import statistics
import time

import jax
from absl import flags

from experiments import _cli
from smtjax import config as config_lib
from smtjax import sharding as shard_lib
from smtjax import variants as variants_lib
from smtjax.data import make_source
from smtjax.data.pipeline import BatchIterator
from smtjax.errors import ConfigError
from smtjax.train import Trainer

FLAGS = flags.FLAGS
_cli.define_config('Config file (with optional :variant).')
flags.DEFINE_integer('rounds', 7, 'Interleaved timing rounds; the median is reported.')
flags.DEFINE_integer('steps', 20, 'Steps per round.')
flags.DEFINE_multi_string('variant', None, 'NAME:key=value,... of config.smt overrides (repeatable); '
                          'replaces the default variants.')
flags.mark_flags_as_required(['config'])

DEFAULT_VARIANTS = {'rollout4': {'rollout_steps': 4}, 'noise': {'memory_noise': 3.0, 'memory_noise_mode': 'matched'}}


def main(argv):
  _cli.start(argv)
  runs = {}
  rng = jax.random.PRNGKey(0)
  with _cli.user_errors():
    variants = dict(_cli.parse_variant(v) for v in FLAGS.variant) if FLAGS.variant else DEFAULT_VARIANTS
    if 'smt' in variants:
      raise ConfigError("--variant: the name 'smt' is plain SMT's")
  configs = {}
  for name, opts in {'smt': {}, **variants}.items():
    c = FLAGS.config.copy_and_resolve_references()
    with _cli.user_errors():  # a bad value or data file stops here, naming it, before any compilation
      for k, v in opts.items():
        variants_lib.override(c, f'smt.{k}', v)
      source = make_source(c.data, c.seed)
      config_lib.validate(c, num_devices=jax.device_count(), data_vocab_size=source.info.vocab_size)
    configs[name] = (c, source)
  for name, (c, source) in configs.items():
    tr = Trainer.create(c)
    it = BatchIterator(source, 'train', c.batch_size, jax.process_index(), jax.process_count())
    batches = [shard_lib.global_batch(next(it), tr.batch_sharding) for _ in range(4)]
    state = tr.init_state(jax.random.PRNGKey(c.seed))
    step = tr.train_step.lower(state, batches[0], rng).compile()
    state, m = step(state, batches[0], rng)  # warm-up
    jax.block_until_ready(m)
    runs[name] = {'step': step, 'state': state, 'batches': batches, 'times': []}
  for _ in range(FLAGS.rounds):
    for r in runs.values():
      t0 = time.perf_counter()
      for i in range(FLAGS.steps):
        r['state'], m = r['step'](r['state'], r['batches'][i % 4], rng)
      jax.block_until_ready(m)
      r['times'].append((time.perf_counter() - t0) / FLAGS.steps)
  base = statistics.median(runs['smt']['times'])
  for name, r in runs.items():
    med = statistics.median(r['times'])
    print(f'{name:>9}: step {1e3 * med:8.2f} ms (median of {FLAGS.rounds} rounds of {FLAGS.steps}), '
          f'{med / base:.2f}x plain SMT', flush=True)


if __name__ == '__main__':
  _cli.run(main)
