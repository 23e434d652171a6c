r"""Times the compiled train step of a config: compilation excluded, median of repeats; FLOPs, TFLOP/s, MFU
and the compiled program's memory.

  python -m experiments.bench --config=configs/tinystories.py:small
  python -m experiments.bench --config=configs/retrieval.py --config.data.seq_len=256 --compare_modes
  python -m experiments.bench --preset=paper_smt        # the published TinyStories sizes (GPU-sized)
  python -m experiments.bench --preset=paper_dmt
  python -m experiments.bench --preset=paper_bptt       # BPTT vs parallel SMT at T=1024
  python -m experiments.bench --memory_table            # peak memory of parallel SMT, T = 256 .. 8192
  python -m experiments.bench --roofline=h200           # the lowest possible step time of each preset
  python -m experiments.bench --preset=gpu_check        # one table for a short GPU lease (<= 8 minutes)
  python -m experiments.bench --length_table            # step time against T: SMT, window SMT, BPTT
  python -m experiments.bench --regression              # the step-time regression guard (a few minutes)

Prints step time, sequences/s, tokens/s, memory transitions trained per second (window mode: one per
sequence; parallel mode: num_transitions, or T, per sequence), FLOPs per step (XLA's cost analysis; scans
counted by trip count, see smtjax.perf), TFLOP/s and MFU against the device's peak bf16 throughput (none
on an unknown device such as a CPU). With --compare_modes, runs the config in both SMT modes at the same
model, batch and length and prints the ratio. --synthetic times on random tokens (no dataset needed);
the presets always do. --preset_scale=tiny shrinks a preset to a few milliseconds (tests).
"""

import io
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
from absl import app, flags, logging
from etils import epath

from experiments import _cli  # noqa: F401 -- JAX options as flags (--jax_log_compiles)
from smtjax import benchmarks, perf
from smtjax import config as config_lib
from smtjax import workdir as workdir_lib
from smtjax.benchmarks import time_train_step
from smtjax.metrics import read_metrics
from smtjax.studies import stats
from smtjax.train import Trainer

FLAGS = flags.FLAGS
_cli.define_config('Config file (with optional :variant).')
flags.DEFINE_integer('steps', 10, 'Timed steps per repeat.')
flags.DEFINE_integer('repeats', 3, 'Repeats; the median is reported (and the min).')
flags.DEFINE_bool('compare_modes', False, 'Time window and parallel SMT at the same size.')
flags.DEFINE_bool('synthetic', False, 'Random tokens instead of the config\'s data source.')
flags.DEFINE_enum('preset', '', ['', 'paper_smt', 'paper_dmt', 'paper_bptt', 'gpu_check'],
                  'A published-size benchmark; gpu_check: all of them in one table, within 8 minutes on one GPU.')
flags.DEFINE_enum('roofline', '', ['', *perf.ROOFLINE_DEVICES], 'Print the roofline floor of every preset on this '
                  'device (from the step\'s FLOPs and bytes; traces only, runs nothing).')
flags.DEFINE_enum('preset_scale', 'paper', ['paper', 'tiny'], 'tiny: a preset or the memory table shrunk to '
                  'CPU test size.')
flags.DEFINE_bool('memory_table', False, 'Peak compiled memory of the parallel-SMT train step over --lengths '
                  '(compiles only, runs nothing).')
flags.DEFINE_list('lengths', ['256', '512', '1024', '2048', '4096', '8192'], '--memory_table and --length_table '
                  '(default there: 64,256,1024,4096): sequence lengths.')
flags.DEFINE_integer('batch', 8, '--memory_table: batch size.')
flags.DEFINE_integer('prefix_chunk', 32, '--memory_table: model.prefix_chunk of the chunked column.')
flags.DEFINE_integer('dense_up_to', 2048, '--memory_table: also compile the unchunked step up to this T.')
flags.DEFINE_bool('remat', True, '--memory_table: model.remat.')
flags.DEFINE_bool('length_table', False, 'Step time against T (--lengths) of parallel SMT, window SMT and BPTT at '
                  'the retrieval small size and the real-data cpu size (--sizes).')
flags.DEFINE_list('sizes', ['retrieval', 'cpu'], '--length_table: retrieval (configs/retrieval.py:small) and/or cpu '
                  '(configs/tinystories.py:cpu).')
flags.DEFINE_float('max_gib', 16.0, '--length_table: a step whose compiled program needs more memory is not run.')
flags.DEFINE_float('cell_seconds', 20.0, '--length_table: timing budget per step and length (at least 2 steps).')
flags.DEFINE_bool('regression', False, 'Time window SMT, parallel SMT, DMT and BPTT at the public architecture and '
                  'the cpu size, each over a matrix-product rate measured beside it, against docs/benchmarks.md.')
flags.DEFINE_string('record', 'docs/benchmarks.md', '--regression: the file holding the recorded figures.')
flags.DEFINE_float('tolerance', 0.20, '--regression: a step slower than its record by more than this is named.')
flags.DEFINE_list('only', [], '--regression: only the steps whose names contain one of these (e.g. cpu,DMT).')
flags.DEFINE_integer('band', 64, '--length_table: model.attn_window of the windowed-encoder column.')

# Published wall-clock figures (method.md §8): s/iter on one H200.
PUBLISHED = {'paper_smt': (9 * 3600 / 150_000, 'SMT: 150k iterations in ~9 h on one H200'),
             'paper_dmt': (7 * 3600 / 1_500, 'DMT: 1.5k iterations in ~7 h on one H200')}
GOALS = {'paper_smt': 'goal on one H100: <= 0.10 s/iter, MFU >= 35%',
         'paper_dmt': 'goal on one H100: <= 2 s/iter',
         'paper_bptt': 'goal: BPTT step >= 10x a parallel-SMT step at equal size'}


# ------------------------------------------------------------------------------------------ configs

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
  from configs import tinystories
  tiny = scale == 'tiny'
  if name == 'paper_smt':  # window mode, bidirectional encoder, T=320, Tc=256, Tf=64, batch 128, bf16
    c = tinystories.get_config()
    if tiny:
      c = _tiny(c)
      c.data.seq_len, c.smt.context, c.smt.future = 24, 16, 8
    return {'SMT (window)': c}
  if name == 'paper_dmt':  # Td=256, k=16, batch 32 (T = Tc + Td + Tf = 576)
    c = tinystories.get_config('dmt')
    if tiny:
      c = _tiny(c)
      c.dmt.context, c.dmt.rollout, c.dmt.every, c.smt.future = 8, 8, 4, 4
      c.smt.context = 8
      c.data.seq_len = 20
    return {'DMT': c}
  if name == 'paper_bptt':  # the published model at T=1024, batch 32: BPTT vs parallel SMT (every transition)
    out = {}
    for method in ('bptt', 'smt'):
      c = tinystories.get_config()
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
  from configs import tinystories
  c = tinystories.get_config()
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


# ------------------------------------------------------------------------------------------- timing

def _print(name, r):
  mfu = f" | MFU {100 * r['mfu']:.1f}%" if 'mfu' in r else ''
  print(f"{name:>14}: step {r['step_ms']:9.2f} ms (min {r['min_ms']:.2f}) | {r['seq_per_s']:9.1f} seq/s | "
        f"{r['tok_per_s']:11.0f} tok/s | {r['transitions_per_s']:11.1f} transitions/s | "
        f"{r['flops'] / 1e9:.4g} GFLOP/step | {r['tflops_per_s']:.4g} TFLOP/s{mfu} | "
        f"compiled peak {r['peak_gb']:.2f} GiB | compile {r['compile_s']:.1f} s", flush=True)


def _describe(config):
  m = config.model
  return (f'batch {config.batch_size}, T {config.data.seq_len}, d {m.d_model}, K {m.num_mem_tokens}, '
          f'depths {m.enc_depth}/{m.dec_depth}/{m.cell_depth}, {m.dtype}')


def run_preset(name: str, scale: str, steps: int, repeats: int) -> dict:
  """Times a preset's configs and prints them next to the published figures; returns {label: result}."""
  results = {}
  for label, c in preset_configs(name, scale).items():
    print(f'{label}: {_describe(c)}', flush=True)
    results[label] = time_train_step(c, steps, repeats, synthetic=True)
    _print(label, results[label])
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
      trainer = Trainer.create(c)
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
      trainer = Trainer.create(c)
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
  from configs import retrieval, tinystories
  from smtjax.studies import compare
  if size == 'retrieval':
    base = compare.at_length(retrieval.get_config('small'), T)
  elif size == 'cpu':
    base = tinystories.get_config('cpu')
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
  trainer = Trainer.create(config)
  r['network_flops'] = perf.network_flops(trainer.train_step, trainer.abstract_state, _abstract_batch(config, trainer),
                                          jax.random.PRNGKey(0), cell=type(trainer.nets.cell).__name__)
  return r


def length_table(sizes, lengths, band: int, max_gib: float, seconds: float, scale: str = 'paper') -> dict:
  """Step time against T (module docstring), one table per size; prints markdown rows as they come."""
  results = {}
  for size in sizes:
    print(f'\n{size}: {_describe(length_configs(size, int(lengths[0]), band, scale)["smt"])} (T varies); '
          f'random tokens, compilation excluded; cells over {max_gib:g} GiB compiled are not run', flush=True)
    header = ['T'] + [LENGTH_COLUMNS[c].format(band=band) + ' ms' for c in LENGTH_COLUMNS] + [
        'SMT / window transitions per s', 'SMT GFLOP encoder / decoder / cell', 'BPTT GFLOP cell / readout']
    print('\n'.join(stats.table(header, [])), flush=True)
    for T in (int(t) for t in lengths):
      row = {col: _time_within(c, max_gib, seconds) for col, c in length_configs(size, T, band, scale).items()}
      results[(size, T)] = row
      ms = [('-' + f' ({r["peak_gb"]:.0f} GiB)') if r['skipped'] else f'{r["step_ms"]:.0f}' for r in row.values()]
      smt, win = row['smt'], row['window']
      ratio = ('-' if smt['skipped'] or win['skipped'] else
               f'{smt["transitions_per_s"] / win["transitions_per_s"]:.0f}x')
      f, b = smt['network_flops'], row['bptt']['network_flops']
      print(stats.row([T, *ms, ratio, f'{f["encoder"] / 1e9:.2f} / {f["decoder"] / 1e9:.2f} / {f["cell"] / 1e9:.2f}',
                       f'{b["cell"] / 1e9:.2f} / {b["decoder"] / 1e9:.2f}']), flush=True)
  return results


def published_run_rate(seconds: float, scale: str = 'paper', enough_rates: int = 0) -> dict:
  """The published TinyStories SMT trained by `python -m experiments.run` on random tokens for `seconds` of
  wall clock (start-up and compilation included), or until it has logged `enough_rates` steps-per-second
  records after the first (0: no such limit), then stopped by SIGTERM (it saves and exits): the logged steps
  per second after the first logged step, the steps done and the seconds it ran."""
  from configs import tinystories
  c = tinystories.get_config()
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


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  dev = jax.devices()[0]
  name, peak = perf.peak_flops(dev)
  print(f'devices: {jax.device_count()} x {dev.device_kind} (peak bf16: '
        f'{f"{peak / 1e12:.0f} TFLOP/s" if peak else "unknown, no MFU"})')
  if FLAGS.roofline:
    roofline_table(FLAGS.roofline, FLAGS.preset_scale)
    return
  if FLAGS.regression:
    result = benchmarks.regression(FLAGS.record, FLAGS.tolerance, FLAGS.preset_scale, only=tuple(FLAGS.only))
    raise SystemExit(1 if result['slower'] else 0)
  if FLAGS.preset == 'gpu_check':
    gpu_check(FLAGS.preset_scale)
    return
  if FLAGS.length_table:
    length_table(FLAGS.sizes, FLAGS.lengths if FLAGS['lengths'].present else [64, 256, 1024, 4096], FLAGS.band,
                 FLAGS.max_gib, FLAGS.cell_seconds, FLAGS.preset_scale)
    return
  if FLAGS.memory_table:
    memory_table([int(t) for t in FLAGS.lengths], FLAGS.batch, FLAGS.prefix_chunk, FLAGS.remat, FLAGS.dense_up_to,
                 FLAGS.preset_scale)
    return
  if FLAGS.preset:
    run_preset(FLAGS.preset, FLAGS.preset_scale, FLAGS.steps, FLAGS.repeats)
    return
  config = FLAGS.config
  if config is None:
    raise app.UsageError('give --config, --preset or --memory_table')
  print(_describe(config))
  if not FLAGS.compare_modes:
    _print(config.smt.mode, time_train_step(config, FLAGS.steps, FLAGS.repeats, FLAGS.synthetic))
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
    results[mode] = time_train_step(c, FLAGS.steps, FLAGS.repeats, FLAGS.synthetic)
    _print(mode, results[mode])
  ratio = results['parallel']['transitions_per_s'] / results['window']['transitions_per_s']
  print(f'parallel / window transitions per second: {ratio:.1f}x')


if __name__ == '__main__':
  _cli.run(main)
