"""Timing compiled train steps: the published sizes, the memory and step-time tables, the step-time
regression guard (the commands: experiments/bench.py), and the narrower benchmarks of experiments/bench_*.py.

`time_train_step(config, ...)` compiles a config's train step ahead of time and times it (compilation
excluded, median of repeats), with its FLOPs and compiled memory. `regression()` times the main step kinds,
window SMT, parallel SMT, DMT and BPTT, at the public code's architecture (`public_architecture`: d=128, K=8,
4 heads of width 64, depths 4/2/4, Tc=128, Tf=32, batch 16, float32) and at the CPU size
(`configs/tinystories.py:cpu`), divides each by a float32 matrix-product rate measured in the same run
(`matmul_gflops`), and compares the result with the figures recorded in docs/benchmarks.md: a step that got
slower than its record by more than the tolerance is named with its ratio. Dividing by a rate measured beside
it makes the comparison hold across machines of one kind and through moderate background load; a different
CPU (cache sizes, vector width) still moves the ratios, so record figures on the machine that guards.

The published TinyStories sizes (`preset_configs`: window SMT, DMT, BPTT against parallel SMT at T=1024) are
timed by `run_preset` beside the paper's wall-clock figures, bounded by `roofline_table` (traced only), and
compiled at growing T by `memory_table`; `length_table` times SMT, window SMT and BPTT against T, and
`gpu_check` gathers the accelerator numbers into one table for a short lease. Their configs are built from
smtjax.variants as configs/tinystories.py and configs/retrieval.py build theirs (the library never reads
configs/), on random tokens. These functions print their tables as they go.

The narrower ones: `rollout` times a DMT iteration as a scan against a Python loop, BPTT against parallel SMT, and
the linear cells' parallel scans against sequential BPTT (experiments/bench_rollout.py); `sampling_study` the
gradient noise and step time against a sampled count (bench_sampling.py); `drift_step_times` the drift-robust
variants against plain SMT, interleaved (bench_drift.py); `pipeline_rate` the input pipeline alone
(bench_data.py).
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath

from smtjax import config as config_lib
from smtjax import dmt, losses, perf, smt, train, variants
from smtjax import sharding as shard_lib
from smtjax import workdir as workdir_lib
from smtjax.data import make_source
from smtjax.data import synthetic as synthetic_tasks
from smtjax.data.pipeline import BatchIterator
from smtjax.errors import ConfigError
from smtjax.metrics import read_metrics
from smtjax.models import Networks
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


def _batches(config, trainer, synthetic: bool, n: int, source=None):
  """`n` global batches for the trainer's mesh: random tokens, or the config's data (from `source` if given)."""
  # A DMT step is timed on random parameters: there is no SMT run to start from (config.init_from).
  num_devices = trainer.mesh.devices.size
  if synthetic:
    config_lib.validate(config, num_devices=num_devices, init_from_later=True)
    local = [_synthetic_batch(config, i) for i in range(n)]
  else:
    source = make_source(config.data, config.seed) if source is None else source
    config_lib.validate(config, num_devices=num_devices, data_vocab_size=source.info.vocab_size, init_from_later=True)
    it = BatchIterator(source, 'train', config.batch_size, jax.process_index(), jax.process_count())
    local = [next(it) for _ in range(n)]
  return [shard_lib.global_batch(b, trainer.batch_sharding) for b in local]


def _call_seconds(fn, repeats: int) -> list[float]:
  """The seconds of each of `repeats` calls of `fn` (its result waited for), after one untimed call (compilation,
  warm-up)."""
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return times


def _steps_seconds(step, state, batches, rng, steps: int):
  """(state, metrics, seconds per step) of `steps` calls of a compiled train step, cycling through `batches`."""
  t0 = time.perf_counter()
  for i in range(steps):
    state, m = step(state, batches[i % len(batches)], rng)
  jax.block_until_ready(m)
  return state, m, (time.perf_counter() - t0) / steps


def time_train_step(config, steps: int, repeats: int, synthetic: bool = False, max_gib: float | None = None,
                    max_seconds: float | None = None, devices=None) -> dict:
  """Compiles the config's train step (ahead of time, on `devices`: default all), then times `repeats` x `steps`
  calls. With `max_gib`, a step whose compiled program needs more memory is not run ({'peak_gb', 'skipped'});
  with `max_seconds`, fewer steps per repeat where the first call shows that they would take longer."""
  trainer = Trainer.from_config(config, devices)
  num_devices = trainer.mesh.devices.size
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
  state, m, first_s = _steps_seconds(compiled, state, batches, rng, 1)  # warm-up
  if max_seconds is not None:
    steps = max(1, min(steps, int(max_seconds / repeats / max(first_s, 1e-6))))
  times = []
  for _ in range(repeats):
    state, m, seconds = _steps_seconds(compiled, state, batches, rng, steps)
    times.append(seconds)
  step = statistics.median(times)
  B, T = config.batch_size, config.data.seq_len
  s = config.smt
  if config.method != 'smt':
    per_seq = config.dmt.rollout if config.method == 'dmt' else T
  else:
    starts = T + 1 - s.rollout_steps  # rollout starts per sequence: all of them, or num_transitions sampled
    per_seq = 1 if s.mode == 'window' else (min(s.num_transitions, starts) or starts)
  # XLA's count of a sharded program is one device's share; the jaxpr count is the whole step.
  total_flops = max(flops['xla'] * num_devices, flops['matmul'])
  return dict(mode=s.mode if config.method == 'smt' else config.method, step_ms=1e3 * step,
              min_ms=1e3 * min(times), compile_s=compile_s, seq_per_s=B / step, tok_per_s=B * T / step,
              transitions_per_s=B * per_seq / step, loss=float(m['loss']), flops=total_flops, skipped=False,
              peak_gb=mem['peak'] / 2**30, **perf.throughput(total_flops, 1 / step, num_devices))


def matmul_gflops(n: int = 1024, repeats: int = 30) -> float:
  """The machine's float32 matrix-product rate now: GFLOP/s of an n x n x n product, its fastest of `repeats`
  (the attainable rate; a median would carry the moment's load into every ratio)."""
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  return 2 * n**3 / min(_call_seconds(lambda: f(a), repeats)) / 1e9


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


# ------------------------------------------------------------------------------------------ one step

def describe(config) -> str:
  """The sizes that set a step's time, on one line."""
  m = config.model
  return (f'batch {config.batch_size}, T {config.data.seq_len}, d {m.d_model}, K {m.num_mem_tokens}, '
          f'depths {m.enc_depth}/{m.dec_depth}/{m.cell_depth}, {m.dtype}')


def print_result(name: str, r: dict) -> None:
  """One line of a `time_train_step` result (MFU only where the device's peak is known)."""
  mfu = f" | MFU {100 * r['mfu']:.1f}%" if 'mfu' in r else ''
  print(f"{name:>14}: step {r['step_ms']:9.2f} ms (min {r['min_ms']:.2f}) | {r['seq_per_s']:9.1f} seq/s | "
        f"{r['tok_per_s']:11.0f} tok/s | {r['transitions_per_s']:11.1f} transitions/s | "
        f"{r['flops'] / 1e9:.4g} GFLOP/step | {r['tflops_per_s']:.4g} TFLOP/s{mfu} | "
        f"compiled peak {r['peak_gb']:.2f} GiB | compile {r['compile_s']:.1f} s", flush=True)


def compare_modes(config, steps: int, repeats: int, synthetic: bool = False) -> dict:
  """Times `config` in window and in parallel SMT at the same model, batch and length (window: one context
  and future per sequence, filling it; parallel: a causal encoder), prints each and the ratio of transitions
  per second; returns {mode: result}."""
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
    results[mode] = time_train_step(c, steps, repeats, synthetic)
    print_result(mode, results[mode])
  ratio = results['parallel']['transitions_per_s'] / results['window']['transitions_per_s']
  print(f'parallel / window transitions per second: {ratio:.1f}x')
  return results


# --------------------------------------------------------------------------- the published sizes (GPU)

# Published wall-clock figures (method.md §8): s/iter on one H200.
PUBLISHED = {'paper_smt': (9 * 3600 / 150_000, 'SMT: 150k iterations in ~9 h on one H200'),
             'paper_dmt': (7 * 3600 / 1_500, 'DMT: 1.5k iterations in ~7 h on one H200')}
GOALS = {'paper_smt': 'goal on one H100: <= 0.10 s/iter, MFU >= 35%',
         'paper_dmt': 'goal on one H100: <= 2 s/iter',
         'paper_bptt': 'goal: BPTT step >= 10x a parallel-SMT step at equal size'}


def _tinystories(size: str = ''):
  """configs/tinystories.py's size ('' published, 'dmt', 'cpu') from the same size table (the library never
  reads configs/); the data options the file spells out are the tinystories source's defaults."""
  return variants.build(size, 'configs/tinystories.py', variants.real_data_sizes(
      lambda: variants.published('tinystories')))


def _retrieval_small(T: int):
  """configs/retrieval.py:small (the needle task, d=32, lr 1e-3 decayed by a cosine) resized to length T as
  studies.compare.at_length resizes it: its future, which reaches the end of the sequence, still does."""
  c = variants.small(variants.synthetic('retrieval', 12, vocab_size=10, num_symbols=8, noise=0.0))
  c.optim.lr, c.optim.schedule = 1e-3, 'cosine'
  to_end = c.smt.future >= c.data.seq_len
  synthetic_tasks.resize(c.data, T)
  c.smt.future = T if to_end else min(T, c.smt.future)
  c.smt.rollout_steps = min(T, c.smt.rollout_steps)
  return c


def _tiny(c):
  """A preset shrunk to CPU test size (same code paths)."""
  m = c.model
  m.d_model, m.num_heads, m.num_mem_tokens = 16, 2, 2
  m.enc_depth = m.dec_depth = m.cell_depth = 1
  m.dtype = 'float32'
  c.batch_size = 2
  return c


def preset_configs(name: str, scale: str = 'paper') -> dict:
  """{label: config} of a preset: the published TinyStories settings (configs/tinystories.py)."""
  tiny = scale == 'tiny'
  if name == 'paper_smt':  # window mode, bidirectional encoder, T=320, Tc=256, Tf=64, batch 128, bf16
    c = _tinystories()
    if tiny:
      c = _tiny(c)
      c.data.seq_len, c.smt.context, c.smt.future = 24, 16, 8
    return {'SMT (window)': c}
  if name == 'paper_dmt':  # Td=256, k=16, batch 32 (T = Tc + Td + Tf = 576)
    c = _tinystories('dmt')
    if tiny:
      c = _tiny(c)
      c.dmt.context, c.dmt.rollout, c.dmt.every, c.smt.future = 8, 8, 4, 4
      c.smt.context = 8
      c.data.seq_len = 20
    return {'DMT': c}
  if name == 'paper_bptt':  # the published model at T=1024, batch 32: BPTT vs parallel SMT (every transition)
    out = {}
    for method in ('bptt', 'smt'):
      c = _tinystories()
      c.method = method
      c.data.seq_len = 16 if tiny else 1024
      c.batch_size = 32
      c.model.remat = True
      c.model.encoder_attention = 'causal'
      c.model.prefix_chunk = 64
      c.smt.mode = 'parallel'  # the default sampling: num_transitions, num_decoder_samples
      if tiny:
        c = _tiny(c)
        c.smt.future = 8
        c.model.prefix_chunk = 4
      out['BPTT' if method == 'bptt' else 'SMT (parallel)'] = c
    return out
  raise ValueError(f'unknown preset {name!r}')


def memory_table_config(T: int, batch: int, chunk: int, remat: bool, scale: str = 'paper'):
  """Parallel SMT at the published model size (d=256, K=16, depths 8/4/8, bf16), sequence length T
  (scale='tiny': the tiny model, for tests)."""
  c = _tinystories()
  c.data.seq_len = T
  c.batch_size = batch
  c.model.encoder_attention = 'causal'
  c.model.prefix_chunk = chunk
  c.model.remat = remat
  c.smt.mode = 'parallel'
  c.smt.future = 64  # and the default sampling: num_transitions, num_decoder_samples
  if scale == 'tiny':
    c = _tiny(c)
    c.batch_size = batch
    c.smt.future = 4
  return c


def run_preset(name: str, scale: str, steps: int, repeats: int) -> dict:
  """Times a preset's configs and prints them next to the published figures; returns {label: result}."""
  results = {}
  for label, c in preset_configs(name, scale).items():
    print(f'{label}: {describe(c)}', flush=True)
    results[label] = time_train_step(c, steps, repeats, synthetic=True)
    print_result(label, results[label])
  if name in PUBLISHED:
    (r,) = results.values()
    pub, what = PUBLISHED[name]
    print(f'published: {pub:.3f} s/iter ({what}); here: {r["step_ms"] / 1e3:.3f} s/iter '
          f'({pub / (r["step_ms"] / 1e3):.2f}x the published rate)')
  else:
    ratio = results['BPTT']['step_ms'] / results['SMT (parallel)']['step_ms']
    print(f'BPTT / parallel SMT step time: {ratio:.1f}x')
  print(GOALS[name])
  return results


def _abstract_batch(config, trainer):
  return {k: jax.ShapeDtypeStruct((config.batch_size, config.data.seq_len), jnp.int32,
                                  sharding=trainer.batch_sharding) for k in ('x', 'y')}


def roofline_table(device: str, scale: str = 'paper') -> list[dict]:
  """Prints, for every preset's train step, its FLOPs and matmul traffic (traced, never compiled or run), the
  lowest possible step time on `device` and what bounds it, and the MFU of the paper's published step time.
  Where a scan re-reads the same weights at every step (DMT's and BPTT's rolled cell), a cache could keep them:
  the memory time is then an estimate between the two columns, and so is a memory-bound floor."""
  print(f'roofline on {perf.ROOFLINE_DEVICES[device][0]}: floor = max(FLOPs / peak, matmul bytes / bandwidth); '
        'weights cached: the memory time if a scan\'s re-read weights stayed in cache (where it differs, the floor '
        'is an estimate); unfused: every operation\'s bytes at full bandwidth (an upper estimate)')
  print(f'{"step":>16} | {"TFLOP":>7} | {"matmul GB":>9} | {"compute ms":>10} | {"memory ms":>9} | '
        f'{"weights cached ms":>17} | {"floor ms":>16} | {"bound":>7} | {"unfused ms":>10} | published')
  rows = []
  for preset in ('paper_smt', 'paper_dmt', 'paper_bptt'):
    for label, c in preset_configs(preset, scale).items():
      trainer = Trainer.from_config(c)
      costs = perf.step_costs(trainer.train_step, trainer.abstract_state, _abstract_batch(c, trainer),
                              jax.random.PRNGKey(0))
      r = dict(label=label, **costs, **perf.roofline(costs, device, PUBLISHED.get(preset, (None,))[0]))
      r['estimate'] = r['bound'] == 'memory' and r['cached_memory_s'] < 0.9 * r['memory_s']
      rows.append(r)
      pub = (f'{r["published_s"]:.3f} s: MFU {100 * r["published_mfu"]:.1f}%, {r["published_over_floor"]:.1f}x the '
             'floor') if 'published_s' in r else '-'
      low = max(r['compute_s'], r['cached_memory_s'])
      floor = f'{1e3 * low:.2f}-{1e3 * r["floor_s"]:.2f} (est.)' if r['estimate'] else f'{1e3 * r["floor_s"]:.2f}'
      print(f'{label:>16} | {costs["flops"] / 1e12:7.2f} | {costs["matmul_bytes"] / 1e9:9.2f} | '
            f'{1e3 * r["compute_s"]:10.2f} | {1e3 * r["memory_s"]:9.2f} | {1e3 * r["cached_memory_s"]:17.2f} | '
            f'{floor:>16} | {r["bound"]:>7} | {1e3 * r["unfused_memory_s"]:10.1f} | {pub}', flush=True)
  return rows


def memory_table(lengths, batch: int, chunk: int, remat: bool, dense_up_to: int, scale: str = 'paper') -> list[dict]:
  """Lowers and compiles (never runs) the parallel-SMT train step for each T; prints peak memory (GiB)."""
  size = 'published model size (d=256, K=16, depths 8/4/8, bf16)' if scale == 'paper' else 'tiny model'
  s = memory_table_config(int(lengths[0]), batch, chunk, remat, scale).smt
  print(f'parallel SMT train step, {size}, batch {batch}, remat {remat}, at most {s.num_transitions} sampled '
        f'transitions and {s.num_decoder_samples} decoded memories per sequence (the defaults); '
        f'device {jax.devices()[0].device_kind}')
  print(f'{"T":>6} | {"prefix_chunk":>12} | {"temp GiB":>9} | {"args GiB":>9} | {"out GiB":>8} | '
        f'{"peak GiB":>9} | compile s')
  rows = []
  for T in lengths:
    for c_ in ([0] if T <= dense_up_to else []) + [chunk]:
      c = memory_table_config(T, batch, c_, remat, scale)
      config_lib.validate(c, num_devices=jax.device_count())
      trainer = Trainer.from_config(c)
      t0 = time.perf_counter()
      compiled = trainer.train_step.lower(trainer.abstract_state, _abstract_batch(c, trainer),
                                          jax.random.PRNGKey(0)).compile()
      m = perf.memory(compiled)
      row = dict(T=T, prefix_chunk=c_, compile_s=time.perf_counter() - t0, **{k: v / 2**30 for k, v in m.items()})
      rows.append(row)
      print(f'{T:6d} | {c_:12d} | {row["temp"]:9.2f} | {row["argument"]:9.2f} | {row["output"]:8.2f} | '
            f'{row["peak"]:9.2f} | {row["compile_s"]:.0f}', flush=True)
  return rows


# ------------------------------------------------------------------------------------ step time against T

LENGTH_COLUMNS = {
    'smt': 'SMT (parallel, defaults)',
    'smt_all': 'SMT decoding every memory',
    'smt_band': 'SMT, encoder window {band}',
    'window': 'window SMT (published)',
    'bptt': 'BPTT, same cell',
    'bptt_gru': 'BPTT, GRU',
}


def length_configs(size: str, T: int, band: int, scale: str = 'paper') -> dict:
  """{column: config} of the step-time table at length T: `size` 'retrieval' (configs/retrieval.py:small resized
  by studies.compare.at_length: sparse targets, the future to the end of the sequence) or 'cpu'
  (configs/tinystories.py:cpu at seq_len T: 8 future targets), both with the library's default sampling
  (smt.num_transitions, smt.num_decoder_samples); scale='tiny' shrinks the model (tests)."""
  if size == 'retrieval':
    base = _retrieval_small(T)
  elif size == 'cpu':
    base = _tinystories('cpu')
    base.data.seq_len = T
  else:
    raise ValueError(f'unknown size {size!r}: retrieval or cpu')
  base = _tiny(base) if scale == 'tiny' else base
  defaults = config_lib.default_config().smt
  base.smt.num_transitions, base.smt.num_decoder_samples = defaults.num_transitions, defaults.num_decoder_samples
  out = {}
  for col in LENGTH_COLUMNS:
    c = base.copy_and_resolve_references()
    if col == 'smt_all':
      c.smt.num_decoder_samples = 0
    elif col == 'smt_band':
      c.model.attn_window = band
    elif col == 'window':  # one transition per sequence: Tc + Tf = T, a bidirectional encoder
      c.smt.mode, c.model.encoder_attention = 'window', 'bidirectional'
      c.smt.future = min(c.smt.future, T // 4)
      c.smt.context = T - c.smt.future
    elif col.startswith('bptt'):
      c.method = 'bptt'
      c.model.cell = 'gru' if col == 'bptt_gru' else c.model.cell
    out[col] = c
  return out


def _time_within(config, max_gib: float, seconds: float) -> dict:
  """`time_train_step` of random tokens within `max_gib` and about `seconds`, and the step's FLOPs by network."""
  r = time_train_step(config, steps=10, repeats=2, synthetic=True, max_gib=max_gib, max_seconds=seconds)
  trainer = Trainer.from_config(config)
  r['network_flops'] = perf.network_flops(trainer.train_step, trainer.abstract_state, _abstract_batch(config, trainer),
                                          jax.random.PRNGKey(0), cell=type(trainer.nets.cell).__name__)
  return r


def _markdown_row(cells) -> str:
  return '| ' + ' | '.join(map(str, cells)) + ' |'


def length_table(sizes, lengths, band: int, max_gib: float, seconds: float, scale: str = 'paper') -> dict:
  """One train step's time (random tokens, compilation excluded) against the sequence length T, one table per
  size (`length_configs`: parallel SMT with the default sampling, decoding every memory and with a windowed
  encoder; window SMT; BPTT of the same cell and of a GRU), with the ratio of SMT's transitions per second to
  window SMT's and the step's GFLOP by network; prints markdown rows as they come; returns {(size, T): {column:
  result}}."""
  results = {}
  for size in sizes:
    print(f'\n{size}: {describe(length_configs(size, int(lengths[0]), band, scale)["smt"])} (T varies); '
          f'random tokens, compilation excluded; cells over {max_gib:g} GiB compiled are not run', flush=True)
    header = ['T'] + [LENGTH_COLUMNS[c].format(band=band) + ' ms' for c in LENGTH_COLUMNS] + [
        'SMT / window transitions per s', 'SMT GFLOP encoder / decoder / cell', 'BPTT GFLOP cell / readout']
    print(_markdown_row(header) + '\n|' + '---|' * len(header), flush=True)
    for T in (int(t) for t in lengths):
      row = {col: _time_within(c, max_gib, seconds) for col, c in length_configs(size, T, band, scale).items()}
      results[(size, T)] = row
      ms = [('-' + f' ({r["peak_gb"]:.0f} GiB)') if r['skipped'] else f'{r["step_ms"]:.0f}' for r in row.values()]
      smt, win = row['smt'], row['window']
      ratio = ('-' if smt['skipped'] or win['skipped'] else
               f'{smt["transitions_per_s"] / win["transitions_per_s"]:.0f}x')
      f, b = smt['network_flops'], row['bptt']['network_flops']
      print(_markdown_row([T, *ms, ratio, f'{f["encoder"] / 1e9:.2f} / {f["decoder"] / 1e9:.2f} / '
                           f'{f["cell"] / 1e9:.2f}', f'{b["cell"] / 1e9:.2f} / {b["decoder"] / 1e9:.2f}']), flush=True)
  return results


# ------------------------------------------------------------------------------------------- GPU check

def published_run_rate(seconds: float, scale: str = 'paper', enough_rates: int = 0) -> dict:
  """The published TinyStories SMT trained by `python -m experiments.run` on random tokens for `seconds` of
  wall clock (start-up and compilation included), or until it has logged `enough_rates` steps-per-second
  records after the first (0: no such limit), then stopped by SIGTERM (it saves and exits): the logged steps
  per second after the first logged step, the steps done and the seconds it ran."""
  c = _tinystories()
  c = _tiny(c) if scale == 'tiny' else c
  work = epath.Path(tempfile.mkdtemp(prefix='smtjax-gpu-check-'))
  buf = io.BytesIO()
  np.lib.format.write_array(buf, np.random.default_rng(0).integers(0, 256, size=1 << 21, dtype=np.int32))
  (work / 'tokens.npy').write_bytes(buf.getvalue())
  c.data.name, c.data.path = 'tokens', str(work / 'tokens.npy')
  c.data.options = ml_collections.ConfigDict(dict(vocab_size=256, test_path='', test_fraction=0.01, decode='bytes'))
  c.log_every, c.eval_every, c.checkpoint_every = 10, 10**9, 10**9
  c.progress_bar, c.metrics_flush_secs = False, 0.0
  (work / 'run').mkdir()
  workdir_lib.save_config(c, work / 'run')
  rates = lambda records: [r['steps_per_s'] for r in records[1:] if 'steps_per_s' in r]
  t0 = time.perf_counter()
  with (work / 'run.log').open('w') as log:  # a file, not a pipe: a pipe nobody reads fills and blocks the run
    proc = subprocess.Popen([sys.executable, '-m', 'experiments.run', f'--workdir={work / "run"}'],
                            stdout=subprocess.DEVNULL, stderr=log)
  while proc.poll() is None and time.perf_counter() - t0 < seconds:
    if enough_rates and len(rates(read_metrics(work / 'run'))) >= enough_rates:
      break
    time.sleep(0.5)
  if proc.poll() is None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=600)
  records, elapsed = read_metrics(work / 'run'), time.perf_counter() - t0
  return dict(steps=max((r['step'] for r in records), default=0), seconds=elapsed,
              steps_per_s=statistics.median(rates(records)) if rates(records) else float('nan'))


def gpu_check(scale: str = 'paper', run_seconds: float = 60.0, enough_rates: int = 0) -> dict:
  """Every accelerator number in one table, for a short lease (about 8 minutes on one H100/H200, compilation
  included): the published SMT step, the DMT iteration, BPTT against parallel SMT at T=1024, the compiled
  peak memory of parallel SMT at T=8192 (batch 8), and the published run's steps/s through experiments.run
  (for `run_seconds`, or until it has logged `enough_rates` rates: `published_run_rate`)."""
  t0 = time.perf_counter()
  dev = jax.devices()[0]
  smt = next(iter(run_preset('paper_smt', scale, steps=5, repeats=2).values()))
  dmt = next(iter(run_preset('paper_dmt', scale, steps=1, repeats=1).values()))
  bptt = run_preset('paper_bptt', scale, steps=1, repeats=1)
  (mem,) = memory_table([32 if scale == 'tiny' else 8192], batch=8, chunk=4 if scale == 'tiny' else 64,
                        remat=True, dense_up_to=0, scale=scale)
  run = published_run_rate(run_seconds, scale, enough_rates)
  ratio = bptt['BPTT']['step_ms'] / bptt['SMT (parallel)']['step_ms']
  rows = [('paper_smt step', f'{smt["step_ms"] / 1e3:.3f} s', f'{smt["tflops_per_s"]:.1f} TFLOP/s, MFU '
           + (f'{100 * smt["mfu"]:.1f}%' if 'mfu' in smt else 'n/a'), 'paper 0.216 s; goal <= 0.10 s, MFU >= 35%'),
          ('paper_dmt iteration', f'{dmt["step_ms"] / 1e3:.2f} s', '', 'paper 16.8 s; goal <= 2 s'),
          ('BPTT / parallel SMT at T=1024', f'{ratio:.1f}x', f'BPTT {bptt["BPTT"]["step_ms"]:.0f} ms, SMT '
           f'{bptt["SMT (parallel)"]["step_ms"]:.0f} ms', 'goal >= 10x'),
          ('parallel SMT T=8192, batch 8, peak', f'{mem["peak"]:.1f} GiB', f'compile {mem["compile_s"]:.0f} s',
           'goal: fits in 80 GB'),
          ('experiments.run, published SMT', f'{run["steps_per_s"]:.2f} steps/s', f'{run["steps"]} steps in '
           f'{run["seconds"]:.0f} s with start-up', 'paper 1 / 0.216 = 4.6 steps/s')]
  print(f'\nGPU check on {jax.device_count()} x {dev.device_kind}, {time.strftime("%Y-%m-%d")}, '
        f'{time.perf_counter() - t0:.0f} s in all:')
  for name, value, detail, ref in rows:
    print(f'  {name:<36} {value:>14}  {detail:<40} {ref}')
  return dict(smt=smt, dmt=dmt, bptt=bptt, memory=mem, run=run, rows=rows)


# ------------------------------------------------------------------------------------------ rollouts

@dataclasses.dataclass(frozen=True)
class RolloutSizes:
  """The sizes of `rollout`'s benchmarks, on the copy task (the defaults: CPU-sized)."""
  d_model: int = 64
  num_mem_tokens: int = 4
  depth: int = 2  # encoder, decoder and cell
  dec_depth: int = 0  # 0: depth
  batch: int = 8
  dmt_context: int = 64
  dmt_rollout: int = 64
  dmt_every: int = 16
  future: int = 16
  lengths: tuple[int, ...] = (64, 256, 1024)  # of BPTT against SMT
  dtype: str = 'float32'
  remat: bool = False
  prefix_chunk: int = 0
  repeats: int = 3  # timed calls; the median is reported


# The published model and DMT sizes (method.md §8).
PAPER_ROLLOUT = dict(d_model=256, num_mem_tokens=16, depth=8, dec_depth=4, batch=32, dmt_context=256, dmt_rollout=256,
                     dmt_every=16, future=64, lengths=(1024,), dtype='bfloat16', remat=True, prefix_chunk=64)


def rollout_config(sizes: RolloutSizes, method: str, T: int):
  """The copy task at `sizes` and length T, trained by `method` (SMT: parallel)."""
  c = config_lib.default_config()
  c.data.name, c.data.seq_len = 'copy', T
  c.data.options.num_symbols = 8
  c.model.vocab_size = 9
  c.model.d_model, c.model.num_mem_tokens = sizes.d_model, sizes.num_mem_tokens
  c.model.num_heads = max(1, sizes.d_model // 32)
  c.model.enc_depth = c.model.cell_depth = sizes.depth
  c.model.dec_depth = sizes.dec_depth or sizes.depth
  c.model.dtype, c.model.remat, c.model.prefix_chunk = sizes.dtype, sizes.remat, sizes.prefix_chunk
  c.batch_size = sizes.batch
  c.method = method
  c.smt.future = sizes.future
  c.smt.mode = 'parallel'
  return c


def _step_seconds_one_device(config, repeats: int) -> float:
  """The median seconds of one train step on the first device (the rollout benchmarks compare single devices)."""
  return time_train_step(config, steps=1, repeats=repeats, devices=jax.devices()[:1])['step_ms'] / 1e3


def dmt_scan_vs_loop(sizes: RolloutSizes) -> dict:
  """One DMT iteration (forward and backward of the whole DMT loss) with the rollout as `lax.scan`, against the
  same iteration step by step: a Python loop over the Td rollout steps, each a jitted call of the cell's step and
  its one-step gradient (as the public implementation's loop does). Prints both; returns {'scan_s', 'loop_s'}."""
  c = variants.dmt(rollout_config(sizes, 'smt', sizes.dmt_context + sizes.dmt_rollout + sizes.future),
                   sizes.dmt_context, sizes.dmt_rollout, sizes.dmt_every, batch_size=sizes.batch)
  trainer = Trainer.from_config(c, jax.devices()[:1])
  nets = trainer.nets
  params = trainer.init_state(jax.random.PRNGKey(0)).params
  (batch,) = _batches(c, trainer, synthetic=False, n=1)
  rng = jax.random.PRNGKey(0)

  scan_iter = jax.jit(jax.grad(lambda p: dmt.dmt_losses(nets, p, batch, rng, c)[0]))

  Tc, Td, k = c.dmt.context, c.dmt.rollout, c.dmt.every
  teacher = jax.jit(lambda p: dmt.teacher_memories(nets, p, batch['x'], Tc, Td, k, prefix=True))

  @jax.jit
  def one_step(p, mem, x_B, y_B, target, has_target):
    """Step s of the loop version: next memory, and the gradient of its memory + readout losses."""
    def loss(p):
      new = nets.step(p, mem, x_B)
      l_mem = jnp.where(has_target, losses.dynamics_loss(new, target), 0.0)
      return c.dmt.coef_mem * l_mem + losses.mean_cross_entropy(nets.readout(p, jax.lax.stop_gradient(new)), y_B), new
    g, new = jax.grad(loss, has_aux=True)(p)
    return jax.lax.stop_gradient(new), g

  def loop_iter():
    targets = teacher(params)
    mem, total = targets[:, 0], None
    for s in range(Td):  # the Python loop over time that the scan replaces
      has = (s + 1) % k == 0
      tgt = targets[:, (s + 1) // k] if has else targets[:, 0]
      mem, g = one_step(params, mem, batch['x'][:, Tc + s], batch['y'][:, Tc + s], tgt, has)
      total = g if total is None else jax.tree.map(jnp.add, total, g)
    return total

  t_scan = statistics.median(_call_seconds(lambda: scan_iter(params), sizes.repeats))
  t_loop = statistics.median(_call_seconds(loop_iter, sizes.repeats))
  print(f'DMT iteration (B={sizes.batch}, Tc={Tc}, Td={Td}, k={k}, Tf={c.smt.future}, d={sizes.d_model}, '
        f'K={sizes.num_mem_tokens}, depth {sizes.depth}): scan {1e3 * t_scan:.1f} ms, '
        f'Python loop {1e3 * t_loop:.1f} ms, loop/scan = {t_loop / t_scan:.1f}x (goal >= 10x)', flush=True)
  print('  (the loop version computes only the memory and readout terms; the scan version the whole DMT loss)')
  return dict(scan_s=t_scan, loop_s=t_loop)


def bptt_vs_smt(sizes: RolloutSizes) -> dict:
  """One BPTT train step against one parallel-SMT train step at equal model, batch and length, at each of
  `sizes.lengths`: SMT's time-parallelism shows as a ratio growing with T. Prints a row per T; returns
  {T: {'bptt': s, 'smt': s}}."""
  defaults = config_lib.default_config().smt
  print(f'BPTT vs parallel SMT train step (B={sizes.batch}, d={sizes.d_model}, K={sizes.num_mem_tokens}, '
        f'depth {sizes.depth}, the default sampling: at most {defaults.num_transitions} '
        f'transitions and {defaults.num_decoder_samples} decoded memories per sequence):')
  out = {}
  for T in sizes.lengths:
    times = out[T] = {m: _step_seconds_one_device(rollout_config(sizes, m, T), sizes.repeats) for m in ('bptt', 'smt')}
    print(f'  T={T:5d}: BPTT {1e3 * times["bptt"]:9.1f} ms | SMT {1e3 * times["smt"]:9.1f} ms | '
          f'BPTT/SMT = {times["bptt"] / times["smt"]:.2f}' + (' (goal at T=1024: >= 10x)' if T == 1024 else ''),
          flush=True)
  return out


def parallel_scan_table(sizes: RolloutSizes, lengths, cells=('mingru', 'lru')) -> dict:
  """BPTT train step of each linear cell, parallel scan against sequential lax.scan, at each T: {(cell, T): (seq s,
  scan s)}."""
  out = {}
  print(f'BPTT train step of the linear cells, sequential lax.scan vs parallel scan (B={sizes.batch}, '
        f'd={sizes.d_model}, K={sizes.num_mem_tokens}, memory Z={sizes.num_mem_tokens * sizes.d_model}):')
  for cell in cells:
    for T in lengths:
      times = []
      for scan in (False, True):
        c = rollout_config(sizes, 'bptt', T)
        c.model.cell, c.bptt.parallel_scan = cell, scan
        times.append(_step_seconds_one_device(c, sizes.repeats))
      out[(cell, T)] = tuple(times)
      print(f'  {cell:>6} T={T:5d}: sequential {1e3 * times[0]:9.1f} ms | parallel scan {1e3 * times[1]:9.1f} ms | '
            f'sequential / scan = {times[0] / times[1]:.2f}', flush=True)
  return out


def rollout(sizes: RolloutSizes, paper: bool = False, scan_lengths=()) -> dict:
  """The rollout benchmarks on one device (`paper`: at PAPER_ROLLOUT's sizes instead of `sizes`'): the DMT
  iteration as a scan against a Python loop and BPTT against parallel SMT; with `scan_lengths`, only the linear
  cells' parallel scan against sequential BPTT at those T."""
  sizes = dataclasses.replace(sizes, **PAPER_ROLLOUT) if paper else sizes
  print(f'device: {jax.devices()[0].device_kind} ({jax.devices()[0].platform})')
  if scan_lengths:
    return dict(parallel_scan=parallel_scan_table(sizes, scan_lengths))
  return dict(dmt=dmt_scan_vs_loop(sizes), bptt_vs_smt=bptt_vs_smt(sizes))


# ---------------------------------------------------------------------------- sampled memories per sequence

# The config.smt loss coefficients set to zero to leave the term a sampled count affects alone.
SAMPLING_TERMS = {'num_decoder_samples': ('coef_dyn', 'coef_unif'), 'num_transitions': ('coef_dec', 'coef_unif')}


def gradient_variance(config, params, batches, draws: int, field: str) -> float:
  """Mean squared distance of the gradient of `field`'s loss term alone from its mean, over batches x draws."""
  c = config.copy_and_resolve_references()
  for coef in SAMPLING_TERMS[field]:
    c.smt[coef] = 0.0
  nets = Networks.from_config(c)

  @jax.jit
  def grads(batch, keys):
    loss = lambda p, r: smt.parallel_losses(nets, p, batch, r, c)[0]
    g = jax.vmap(jax.grad(loss), in_axes=(None, 0))(params, keys)
    return jnp.concatenate([v.reshape(keys.shape[0], -1) for v in jax.tree.leaves(g)], axis=1)

  keys = jax.random.split(jax.random.PRNGKey(1), len(batches) * draws).reshape(len(batches), draws, -1)
  flat = np.concatenate([np.asarray(grads(b, k), np.float64) for b, k in zip(batches, keys)])
  return float(np.mean(np.sum((flat - flat.mean(0)) ** 2, axis=1)))


def sampling_study(config, field: str, samples, pretrain_steps: int, num_batches: int, draws: int, steps: int,
                   repeats: int) -> list:
  """Trains the config's teacher for `pretrain_steps`, then for each count S of config.smt.`field` (0: all)
  measures the gradient variance of that loss term alone relative to taking all, the step time, and the
  efficiency (all's variance x step time over S's). Rows {S, variance_ratio, step_ms, efficiency}, printed as they
  come."""
  c = config.copy_and_resolve_references()
  c.num_steps, c.progress_bar = pretrain_steps, False
  c.eval_every = c.checkpoint_every = pretrain_steps
  with tempfile.TemporaryDirectory() as work:
    train.train_and_evaluate(c, work)
    _, params = train.load_params(work)
  source = make_source(c.data, c.seed)
  it = BatchIterator(source, 'train', c.batch_size, 0, 1, prefetch=0)
  batches = [jax.tree.map(jnp.asarray, next(it)) for _ in range(num_batches)]
  it.close()
  every = c.data.seq_len + (1 if field == 'num_decoder_samples' else 1 - c.smt.rollout_steps)
  print(f'{field} of {every} per sequence (T={c.data.seq_len}); teacher trained {pretrain_steps} steps', flush=True)
  print(f'{"S":>4} | {"grad variance / all":>19} | {"step ms":>8} | efficiency', flush=True)
  rows, base = [], None
  counts = sorted({v if 0 < v < every else 0 for v in samples}, key=lambda v: v or every, reverse=True)
  for S in counts:  # all (0) first: the reference
    c.smt[field] = S
    var = gradient_variance(c, params, batches, draws if S else 1, field)
    ms = time_train_step(c, steps, repeats)['step_ms']
    base = base or (var, ms)
    row = dict(S=S, variance_ratio=var / base[0], step_ms=ms, efficiency=base[0] * base[1] / (var * ms))
    rows.append(row)
    print(f'{S or "all":>4} | {row["variance_ratio"]:19.2f} | {ms:8.1f} | {row["efficiency"]:.2f}',
          flush=True)
  return rows


# ------------------------------------------------------------------------------ drift-robust variants

DRIFT_VARIANTS = {'rollout4': {'rollout_steps': 4}, 'noise': {'memory_noise': 3.0, 'memory_noise_mode': 'matched'}}


def drift_step_times(config, overrides: dict | None = None, rounds: int = 7, steps: int = 20) -> dict:
  """The train-step time of plain SMT and of each variant ({name: {config.smt field: value}}; default
  DRIFT_VARIANTS), timed in `rounds` interleaved rounds of `steps` steps each, so that a changing machine load hits
  every variant alike. Every variant's config and data are checked before any compilation (a ConfigError or
  SmtjaxError names the bad one). Prints each median and its ratio to plain SMT; returns {name: median s}."""
  overrides = DRIFT_VARIANTS if overrides is None else overrides
  if 'smt' in overrides:
    raise ConfigError("the variant name 'smt' is plain SMT's")
  configs = {}
  for name, opts in {'smt': {}, **overrides}.items():
    c = config.copy_and_resolve_references()
    for k, v in opts.items():
      variants.override(c, f'smt.{k}', v)
    source = make_source(c.data, c.seed)
    config_lib.validate(c, num_devices=jax.device_count(), data_vocab_size=source.info.vocab_size)
    configs[name] = (c, source)
  rng = jax.random.PRNGKey(0)
  runs = {}
  for name, (c, source) in configs.items():
    trainer = Trainer.from_config(c)
    batches = _batches(c, trainer, synthetic=False, n=4, source=source)
    state = trainer.init_state(jax.random.PRNGKey(c.seed))
    step = trainer.train_step.lower(state, batches[0], rng).compile()
    state, _, _ = _steps_seconds(step, state, batches, rng, 1)  # warm-up
    runs[name] = {'step': step, 'state': state, 'batches': batches, 'times': []}
  for _ in range(rounds):
    for r in runs.values():
      r['state'], _, seconds = _steps_seconds(r['step'], r['state'], r['batches'], rng, steps)
      r['times'].append(seconds)
  medians = {name: statistics.median(r['times']) for name, r in runs.items()}
  for name, med in medians.items():
    print(f'{name:>9}: step {1e3 * med:8.2f} ms (median of {rounds} rounds of {steps}), '
          f'{med / medians["smt"]:.2f}x plain SMT', flush=True)
  return medians


# ------------------------------------------------------------------------------------ the input pipeline

def pipeline_rate(data_dir: str, cache_dir: str = '', batch_size: int = 128, seq_len: int = 320, prefetch: int = 2,
                  batches: int = 100, repeats: int = 5, warmup: int = 10, train_steps_per_s: float = 0.0) -> dict:
  """BatchIterator alone over TinyStories at `data_dir` (a .txt file or directory): the median of `repeats` runs
  of `batches` batches, after `warmup` batches and the token cache's build (in `cache_dir`; '': $SMTJAX_CACHE,
  else a temporary directory), against the rate a train step consumes (`train_steps_per_s`; 0: the published
  run's). Prints the rates; returns {'batches_per_s', 'runs'}."""
  with tempfile.TemporaryDirectory(prefix='smtjax-bench-') as tmp:
    cache_dir = cache_dir or os.environ.get('SMTJAX_CACHE', '') or tmp
    c = config_lib.default_config().data
    c.name, c.seq_len, c.path = 'tinystories', seq_len, data_dir
    c.options = ml_collections.ConfigDict(dict(cache_dir=cache_dir, download=False))
    t0 = time.perf_counter()
    source = make_source(c, seed=0)
    print(f'source: {data_dir} ({source.num_tokens("train"):,} train tokens; cache ready in '
          f'{time.perf_counter() - t0:.2f}s, {cache_dir})')
    it = BatchIterator(source, 'train', batch_size, prefetch=prefetch)
    for _ in range(warmup):
      b = next(it)
    assert b['x'].shape == (batch_size, seq_len), b['x'].shape
    rates = []
    for _ in range(repeats):
      t = time.perf_counter()
      for _ in range(batches):
        next(it)
      rates.append(batches / (time.perf_counter() - t))
    it.close()
  r = statistics.median(rates)
  print(f'pipeline alone, batch {batch_size} x {seq_len} (windows of {seq_len + 1}), '
        f'prefetch {prefetch}, {os.cpu_count()} CPUs, median of {repeats} x {batches} batches:')
  seqs = r * batch_size
  print(f'  {r:.1f} batches/s   {seqs:,.0f} sequences/s   {seqs * seq_len:,.0f} tokens/s')
  print(f'  (runs: {", ".join(f"{x:.1f}" for x in rates)} batches/s)')
  need, what = (train_steps_per_s, 'the measured train step') if train_steps_per_s else \
      (1 / PUBLISHED['paper_smt'][0], 'the published run (150k steps in ~9 h on one H200)')
  print(f'  {r / need:.1f}x what {what} consumes ({need:.2f} batches/s); the target is >= 10x')
  return dict(batches_per_s=r, runs=rates)
