r"""Times the compiled SMT train step of a config: warm-up (compilation) excluded, median of repeats.

  python -m experiments.bench --config=configs/tinystories.py:small
  python -m experiments.bench --config=configs/retrieval.py --config.data.seq_len=256 --compare_modes

Prints step time, sequences/s, tokens/s and memory transitions trained per second (window mode: one
per sequence; parallel mode: num_transitions, or T, per sequence). With --compare_modes, runs the
config in both SMT modes at the same model, batch and length and prints the ratio.
"""

import statistics
import time

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from smtjax import config as config_lib
from smtjax import sharding as shard_lib
from smtjax.data import make_source
from smtjax.data.pipeline import BatchIterator
from smtjax.train import Trainer

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Config file (with optional :variant).', lock_config=True)
flags.DEFINE_integer('steps', 10, 'Timed steps per repeat.')
flags.DEFINE_integer('repeats', 3, 'Repeats; the median is reported.')
flags.DEFINE_bool('compare_modes', False, 'Time window and parallel SMT at the same size.')


def time_train_step(config, steps: int, repeats: int) -> dict:
  source = make_source(config.data, config.seed)
  config_lib.validate(config, num_devices=jax.device_count(), data_vocab_size=source.info.vocab_size)
  trainer = Trainer.create(config)
  state = trainer.init_state(jax.random.PRNGKey(config.seed))
  it = BatchIterator(source, 'train', config.batch_size, jax.process_index(), jax.process_count())
  batches = [shard_lib.global_batch(next(it), trainer.batch_sharding) for _ in range(min(steps, 4))]
  rng = jax.random.PRNGKey(0)
  t0 = time.perf_counter()
  state, m = trainer.train_step(state, batches[0], rng)  # compile
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for i in range(steps):
      state, m = trainer.train_step(state, batches[i % len(batches)], rng)
    jax.block_until_ready(m)
    times.append((time.perf_counter() - t0) / steps)
  step = statistics.median(times)
  B, T = config.batch_size, config.data.seq_len
  s = config.smt
  per_seq = 1 if s.mode == 'window' else (s.num_transitions or T)
  return dict(mode=s.mode, step_ms=1e3 * step, compile_s=compile_s, seq_per_s=B / step, tok_per_s=B * T / step,
              transitions_per_s=B * per_seq / step, loss=float(m['loss']))


def _print(name, r):
  print(f"{name:>10}: step {r['step_ms']:9.2f} ms | {r['seq_per_s']:10.1f} seq/s | {r['tok_per_s']:12.0f} tok/s | "
        f"{r['transitions_per_s']:12.1f} transitions/s | compile {r['compile_s']:.1f} s", flush=True)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = FLAGS.config
  print(f'devices: {jax.device_count()} x {jax.devices()[0].device_kind}; batch {config.batch_size}, '
        f'T {config.data.seq_len}, d {config.model.d_model}, K {config.model.num_mem_tokens}, '
        f'depths {config.model.enc_depth}/{config.model.dec_depth}/{config.model.cell_depth}, {config.model.dtype}')
  if not FLAGS.compare_modes:
    _print(config.smt.mode, time_train_step(config, FLAGS.steps, FLAGS.repeats))
    return
  results = {}
  for mode in ('window', 'parallel'):
    c = config.copy_and_resolve_references()
    c.smt.mode = mode
    if mode == 'window':
      c.smt.context = c.data.seq_len - c.smt.future
      if c.smt.context < 1:
        c.smt.future = c.data.seq_len // 4
        c.smt.context = c.data.seq_len - c.smt.future
    else:
      c.model.encoder_attention = 'causal'
    results[mode] = time_train_step(c, FLAGS.steps, FLAGS.repeats)
    _print(mode, results[mode])
  ratio = results['parallel']['transitions_per_s'] / results['window']['transitions_per_s']
  print(f'parallel / window transitions per second: {ratio:.1f}x')


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main)
