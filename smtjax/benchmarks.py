"""Timing compiled train steps, and the step-time regression guard.

`time_train_step(config, ...)` compiles a config's train step ahead of time and times it (compilation
excluded, median of repeats), with its FLOPs and compiled memory. `regression()` times the main step kinds,
window SMT, parallel SMT, DMT and BPTT, at the public code's architecture (`public_architecture`: d=128, K=8,
4 heads of width 64, depths 4/2/4, Tc=128, Tf=32, batch 16, float32) and at the CPU size
(`configs/tinystories.py:cpu`), divides each by a float32 matrix-product rate measured in the same run
(`matmul_gflops`), and compares the result with the figures recorded in docs/benchmarks.md: a step that got
slower than its record by more than the tolerance is named with its ratio. Dividing by a rate measured beside
it makes the comparison hold across machines of one kind and through moderate background load; a different
CPU (cache sizes, vector width) still moves the ratios, so record figures on the machine that guards.
"""

from __future__ import annotations

import re
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from smtjax import config as config_lib
from smtjax import perf, variants
from smtjax import sharding as shard_lib
from smtjax.data import make_source
from smtjax.data.pipeline import BatchIterator
from smtjax.train import Trainer

# The guarded steps, in the order they are timed: (name, size, method, mode).
REGRESSION_STEPS = (
    ('window SMT, public', 'public', 'smt', 'window'),
    ('parallel SMT, public', 'public', 'smt', 'parallel'),
    ('DMT, public', 'public', 'dmt', 'window'),
    ('BPTT, public', 'public', 'bptt', 'window'),
    ('window SMT, cpu', 'cpu', 'smt', 'window'),
    ('parallel SMT, cpu', 'cpu', 'smt', 'parallel'),
    ('DMT, cpu', 'cpu', 'dmt', 'window'),
    ('BPTT, cpu', 'cpu', 'bptt', 'window'),
)
RECORD_HEADING = '## Step-time regression guard'


# ------------------------------------------------------------------------------------------------ timing

def _synthetic_batch(config, seed: int):
  rng = np.random.default_rng(seed)
  x = rng.integers(0, config.model.vocab_size, (config.batch_size, config.data.seq_len + 1), dtype=np.int32)
  return {'x': x[:, :-1], 'y': x[:, 1:]}


def _batches(config, trainer, synthetic: bool, n: int):
  # A DMT step is timed on random parameters: there is no SMT run to start from (config.init_from).
  if synthetic:
    config_lib.validate(config, num_devices=jax.device_count(), init_from_later=True)
    local = [_synthetic_batch(config, i) for i in range(n)]
  else:
    source = make_source(config.data, config.seed)
    config_lib.validate(config, num_devices=jax.device_count(), data_vocab_size=source.info.vocab_size,
                        init_from_later=True)
    it = BatchIterator(source, 'train', config.batch_size, jax.process_index(), jax.process_count())
    local = [next(it) for _ in range(n)]
  return [shard_lib.global_batch(b, trainer.batch_sharding) for b in local]


def time_train_step(config, steps: int, repeats: int, synthetic: bool = False, max_gib: float | None = None,
                    max_seconds: float | None = None) -> dict:
  """Compiles the config's train step (ahead of time), then times `repeats` x `steps` calls. With `max_gib`, a
  step whose compiled program needs more memory is not run ({'peak_gb', 'skipped'}); with `max_seconds`, fewer
  steps per repeat where the first call shows that they would take longer."""
  trainer = Trainer.create(config)
  batches = _batches(config, trainer, synthetic, min(steps, 4))
  rng = jax.random.PRNGKey(0)
  t0 = time.perf_counter()
  compiled = trainer.train_step.lower(trainer.abstract_state, batches[0], rng).compile()
  compile_s = time.perf_counter() - t0
  mem = perf.memory(compiled)
  if max_gib is not None and mem['peak'] / 2**30 > max_gib:
    return dict(peak_gb=mem['peak'] / 2**30, skipped=True, compile_s=compile_s)
  flops = perf.step_flops(trainer.train_step, trainer.abstract_state, batches[0], rng, compiled=compiled)
  state = trainer.init_state(jax.random.PRNGKey(config.seed))
  t0 = time.perf_counter()
  state, m = compiled(state, batches[0], rng)  # warm-up
  jax.block_until_ready(m)
  if max_seconds is not None:
    steps = max(1, min(steps, int(max_seconds / repeats / max(time.perf_counter() - t0, 1e-6))))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for i in range(steps):
      state, m = compiled(state, batches[i % len(batches)], rng)
    jax.block_until_ready(m)
    times.append((time.perf_counter() - t0) / steps)
  step = statistics.median(times)
  B, T = config.batch_size, config.data.seq_len
  s = config.smt
  if config.method != 'smt':
    per_seq = config.dmt.rollout if config.method == 'dmt' else T
  else:
    starts = T + 1 - s.rollout_steps  # rollout starts per sequence: all of them, or num_transitions sampled
    per_seq = 1 if s.mode == 'window' else (min(s.num_transitions, starts) or starts)
  # XLA's count of a sharded program is one device's share; the jaxpr count is the whole step.
  total_flops = max(flops['xla'] * jax.device_count(), flops['matmul'])
  return dict(mode=s.mode if config.method == 'smt' else config.method, step_ms=1e3 * step,
              min_ms=1e3 * min(times), compile_s=compile_s, seq_per_s=B / step, tok_per_s=B * T / step,
              transitions_per_s=B * per_seq / step, loss=float(m['loss']), flops=total_flops, skipped=False,
              peak_gb=mem['peak'] / 2**30, **perf.throughput(total_flops, 1 / step, jax.device_count()))


def matmul_gflops(n: int = 1024, repeats: int = 30) -> float:
  """The machine's float32 matrix-product rate now: GFLOP/s of an n x n x n product, its fastest of `repeats`
  (the attainable rate; a median would carry the moment's load into every ratio)."""
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  jax.block_until_ready(f(a))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(f(a))
    times.append(time.perf_counter() - t0)
  return 2 * n**3 / min(times) / 1e9


# ------------------------------------------------------------------------------------- the guarded steps

def public_architecture(method: str, mode: str = 'window', scale: str = 'paper'):
  """The public code's architecture as run side by side with it on CPU: d=128, K=8, 4 heads of width 64,
  depths 4/2/4, Tc=128, Tf=32 (T=160), batch 16, float32. DMT rolls Td=32 steps, matched every k=8 (T=192);
  BPTT reads T=160; parallel SMT reads a causal token stream of T=160. `scale='tiny'`: the same code paths at
  test size."""
  c = variants.published('tinystories', seq_len=160, context=128, future=32)
  m = c.model
  m.d_model, m.num_mem_tokens, m.num_heads, m.enc_depth, m.dec_depth, m.cell_depth = 128, 8, 4, 4, 2, 4
  m.dtype = 'float32'
  c.batch_size = 16
  rollout, every = 32, 8
  if scale == 'tiny':
    _shrink(c)
    rollout, every = 4, 2
  if method == 'dmt':
    return variants.dmt(c, context=c.smt.context, rollout=rollout, every=every, batch_size=c.batch_size)
  return _as_method(c, method, mode)


def cpu_size(method: str, mode: str = 'window', scale: str = 'paper'):
  """The CPU size of `configs/tinystories.py:cpu` (`variants.cpu_real`: d=64, K=4, depths 2/2/2, T=128, batch
  16; parallel SMT) as the given method and mode: window SMT with a bidirectional encoder over Tc=64, DMT rolled
  to the end of the sequence (`variants.parallel_dmt`), BPTT over T."""
  c = variants.cpu_real(variants.published('tinystories'))
  if scale == 'tiny':
    _shrink(c)
  if method == 'dmt':
    return variants.parallel_dmt(c)
  return _as_method(c, method, mode)


def _shrink(c):
  m = c.model
  m.d_model, m.num_mem_tokens, m.num_heads, m.head_dim = 16, 2, 2, 8
  m.enc_depth = m.dec_depth = m.cell_depth = 1
  c.data.seq_len, c.smt.context, c.smt.future, c.batch_size = 12, 8, 4, 2


def _as_method(c, method: str, mode: str):
  if method == 'bptt':
    c.method = 'bptt'
  elif mode == 'parallel':
    c.smt.mode, c.model.encoder_attention = 'parallel', 'causal'
  else:
    c.smt.mode, c.model.encoder_attention = 'window', 'bidirectional'
  return c


def regression_config(size: str, method: str, mode: str, scale: str = 'paper'):
  """The config of one guarded step."""
  return (public_architecture if size == 'public' else cpu_size)(method, mode, scale)


def read_record(path) -> dict[str, float]:
  """{step name: normalised time} from the table under RECORD_HEADING in `path` (docs/benchmarks.md): the
  last column of each row whose first cell is a guarded step's name."""
  text = epath.Path(path).read_text()
  if RECORD_HEADING not in text:
    return {}
  section = text.split(RECORD_HEADING, 1)[1].split('\n## ', 1)[0]
  names = {name for name, *_ in REGRESSION_STEPS}
  out = {}
  for line in section.splitlines():
    cells = [c.strip() for c in line.strip().strip('|').split('|')]
    if cells and cells[0] in names:
      try:
        out[cells[0]] = float(re.sub(r'[^0-9.eE+-]', '', cells[-1]))
      except ValueError:
        continue
  return out


def regression(record_path, tolerance: float = 0.20, scale: str = 'paper', steps: int = 30, repeats: int = 3,
               only: tuple[str, ...] = (), seconds: float = 6.0) -> dict:
  """Times every guarded step (`only`: those whose name contains one of these; its fastest repeat), normalises
  each by the machine's matrix-product rate (the fastest of the calibrations made before, between and after
  the steps: the attainable rate during the run; normalised = GFLOP the product would do in one step's time),
  and compares it with the record in `record_path`. Prints a table; returns {'rows': [...], 'slower': [names],
  'matmul_gflops': rate}."""
  record = read_record(record_path) if record_path else {}
  rates, timed = [matmul_gflops()], []
  for name, size, method, mode in REGRESSION_STEPS:
    if only and not any(o in name for o in only):
      continue
    # Up to `steps` calls per repeat, fewer where they would take more than `seconds` in all: a fast step is
    # timed over many calls (its time is noisy), a slow one over one call per repeat.
    r = time_train_step(regression_config(size, method, mode, scale), steps, repeats, synthetic=True,
                        max_seconds=seconds)
    timed.append((name, r['min_ms']))  # the fastest repeat: the least disturbed by the machine's other work
    rates.append(matmul_gflops())
    print(f'timed {name}: {r["min_ms"]:.1f} ms (median {r["step_ms"]:.1f})', flush=True)
  rate = max(rates)
  rows, slower = [], []
  print(f'matrix-product rate: {rate:.1f} GFLOP/s (fastest of {len(rates)} calibrations, slowest {min(rates):.1f})')
  print(f'{"step":<22} {"ms":>9} {"normalised":>11} {"record":>9} {"ratio":>7}')
  for name, ms in timed:
    norm, ref = ms / 1e3 * rate, record.get(name)
    ratio = norm / ref if ref else float('nan')
    if ref and ratio > 1 + tolerance:
      slower.append(name)
    rows.append(dict(name=name, step_ms=ms, matmul_gflops=rate, normalised=norm, record=ref, ratio=ratio))
    print(f'{name:<22} {ms:9.1f} {norm:11.2f} {ref or float("nan"):9.2f} {ratio:7.2f}'
          + ('  SLOWER' if name in slower else ''))
  if slower:
    print('slower than recorded by more than {:.0%}: {}'.format(
        tolerance, ', '.join(f'{r["name"]} ({r["ratio"]:.2f}x)' for r in rows if r['name'] in slower)))
  elif record:
    print(f'no step slower than recorded by more than {tolerance:.0%}')
  else:
    print(f'no record in {record_path}: paste the rows above under "{RECORD_HEADING}" there')
  return dict(rows=rows, slower=slower, matmul_gflops=rate)
