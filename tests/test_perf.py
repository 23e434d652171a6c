"""FLOPs, MFU, compiled memory, profiles and the benchmark presets, at tiny sizes on CPU."""

import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from smtjax import benchmarks, perf, train
from smtjax import config as config_lib
from smtjax.metrics import read_metrics
from tests.conftest import tiny_config


@pytest.mark.parametrize('kind,name', [('NVIDIA H100 80GB HBM3', 'H100'), ('NVIDIA H200', 'H200'),
                                       ('NVIDIA A100-SXM4-80GB', 'A100'), ('TPU v4', 'TPU v4'),
                                       ('TPU v5 lite', 'TPU v5e'), ('TPU v5', 'TPU v5p'), ('TPU v5p', 'TPU v5p'),
                                       ('cpu', 'unknown'), ('NVIDIA GeForce RTX 4090', 'unknown')])
def test_device_names(kind, name):
  assert perf.device_name(kind) == name


def test_throughput_and_mfu():
  h100 = types.SimpleNamespace(device_kind='NVIDIA H100 80GB HBM3')
  r = perf.throughput(2e12, 100.0, num_devices=2, device=h100)
  assert r['tflops_per_s'] == pytest.approx(200.0)
  assert r['mfu'] == pytest.approx(200e12 / (2 * 989e12))
  assert 'mfu' not in perf.throughput(2e12, 100.0, device=types.SimpleNamespace(device_kind='cpu'))


def test_matmul_flops_count_scan_trip_counts():
  """XLA's cost analysis counts a loop body once; the jaxpr count multiplies it by the scan length."""
  a, b = jnp.ones((8, 32)), jnp.ones((32, 32))
  f = jax.jit(lambda a, b: jax.lax.scan(lambda c, _: (jnp.tanh(c @ b), None), a, None, length=10)[0])
  one = 2 * 8 * 32 * 32
  r = perf.step_flops(f, a, b)
  assert r['matmul'] == 10 * one
  assert r['xla'] < 2 * one  # the body once (plus elementwise work)
  assert r['flops'] == 10 * one
  # Reverse mode: forward and the backward products with respect to `a` (b is not differentiated).
  g = jax.grad(lambda a: jnp.sum(f(a, b)))
  assert perf.step_flops(jax.jit(g), a)['matmul'] == 20 * one


def test_train_step_flops_and_memory():
  """A loop-free step: XLA's count covers every matrix product; compiled memory is positive."""
  c = tiny_config('window')
  trainer = train.Trainer.from_config(c, jax.devices()[:1])
  state = trainer.init_state(jax.random.PRNGKey(0))
  batch = {k: jnp.zeros((c.batch_size, c.data.seq_len), jnp.int32) for k in ('x', 'y')}
  r = perf.step_flops(trainer.train_step, state, batch, jax.random.PRNGKey(0))
  assert r['matmul'] > 0 and r['xla'] >= 0.99 * r['matmul']
  m = perf.memory(trainer.train_step.lower(state, batch, jax.random.PRNGKey(0)).compile())
  assert m['peak'] == m['temp'] + m['argument'] + m['output'] - m['alias'] and m['argument'] > 0


def test_runner_logs_tflops_and_writes_profile(tmp_path):
  c = tiny_config()
  c.num_steps, c.log_every, c.eval_every, c.checkpoint_every = 6, 2, 6, 6
  c.profile_steps = '2:4'
  train.train_and_evaluate(c, str(tmp_path))
  logged = [r for r in read_metrics(str(tmp_path)) if 'loss' in r]
  assert logged and all(r['tflops_per_s'] > 0 for r in logged)
  assert all('mfu' not in r for r in logged)  # CPU: no known peak
  traces = [f for _, _, files in os.walk(tmp_path / 'profile') for f in files if f.endswith('.xplane.pb')]
  assert traces, list(os.walk(tmp_path / 'profile'))


@pytest.mark.parametrize('spec', ['5', '3:3', '0:2', 'a:b', '4:2'])
def test_profile_steps_validated(spec):
  c = tiny_config()
  c.profile_steps = spec
  with pytest.raises(config_lib.ConfigError, match='profile_steps'):
    config_lib.validate(c)


def test_profile_range():
  c = tiny_config()
  assert config_lib.profile_range(c) is None
  c.profile_steps = '100:105'
  assert config_lib.profile_range(c) == (100, 105)


@pytest.mark.parametrize('preset', ['paper_smt', 'paper_dmt', 'paper_bptt'])
def test_bench_presets_run_tiny(preset, capsys):
  results = benchmarks.run_preset(preset, 'tiny', steps=1, repeats=1)
  out = capsys.readouterr().out
  for r in results.values():
    assert r['step_ms'] > 0 and r['flops'] > 0 and r['tflops_per_s'] > 0
    assert jnp.isfinite(r['loss'])
  assert ('published' in out) == (preset != 'paper_bptt')
  assert 'goal' in out
  # The presets are the published configs: only the sizes shrink.
  full = benchmarks.preset_configs(preset)
  for c in full.values():
    assert (c.model.d_model, c.model.num_mem_tokens, c.model.enc_depth, c.model.dec_depth, c.model.cell_depth,
            c.model.dtype) == (256, 16, 8, 4, 8, 'bfloat16')
  if preset == 'paper_smt':
    (c,) = full.values()
    assert (c.data.seq_len, c.smt.context, c.smt.future, c.batch_size, c.smt.mode) == (320, 256, 64, 128, 'window')
  if preset == 'paper_dmt':
    (c,) = full.values()
    assert (c.dmt.rollout, c.dmt.every, c.batch_size) == (256, 16, 32)


def test_bench_configs_are_the_config_files():
  """The benchmarks build their configs from smtjax.variants (the library never reads configs/): every field a
  train step reads is that of configs/tinystories.py, and of configs/retrieval.py:small resized by
  studies.compare.at_length."""
  from configs import retrieval, tinystories
  from smtjax.studies import compare
  step = lambda c: {k: c[k].to_dict() for k in ('model', 'smt', 'dmt', 'bptt', 'optim')} | dict(
      method=c.method, batch_size=c.batch_size, data=(c.data.name, c.data.seq_len))
  assert step(benchmarks.preset_configs('paper_smt')['SMT (window)']) == step(tinystories.get_config())
  assert step(benchmarks.preset_configs('paper_dmt')['DMT']) == step(tinystories.get_config('dmt'))
  defaults = config_lib.default_config().smt
  for T in (8, 1024):
    cpu = tinystories.get_config('cpu')
    cpu.data.seq_len = T
    for size, c in (('retrieval', compare.at_length(retrieval.get_config('small'), T)), ('cpu', cpu)):
      c.smt.num_transitions, c.smt.num_decoder_samples = defaults.num_transitions, defaults.num_decoder_samples
      assert step(benchmarks.length_configs(size, T, band=64)['smt']) == step(c), (size, T)


@pytest.mark.slow
def test_memory_table_tiny(capsys):
  rows = benchmarks.memory_table([16, 32], batch=2, chunk=4, remat=True, dense_up_to=16, scale='tiny')
  assert [(r['T'], r['prefix_chunk']) for r in rows] == [(16, 0), (16, 4), (32, 4)]
  assert all(r['peak'] > 0 for r in rows)
  assert 'peak GiB' in capsys.readouterr().out


def test_step_costs_count_scans_by_trip_count():
  """FLOPs and bytes of a matrix product inside a scan of length 3, against the numbers written out."""
  m, k, n = 4, 5, 6
  def f(a, b):
    return jax.lax.scan(lambda c, _: (c, a @ b), 0.0, None, length=3)[1]
  a, b = jnp.ones((m, k)), jnp.ones((k, n))
  costs = perf.step_costs(jax.jit(f), a, b)
  assert costs['flops'] == 3 * 2 * m * k * n
  assert costs['matmul_bytes'] == 3 * 4 * (m * k + k * n + m * n)
  assert costs['bytes'] >= costs['matmul_bytes']
  r = perf.roofline(costs, 'h200', published_s=1e-3)
  np.testing.assert_allclose(r['compute_s'], costs['flops'] / 989e12)
  np.testing.assert_allclose(r['memory_s'], costs['matmul_bytes'] / 4.8e12)
  assert r['bound'] == 'memory' and r['floor_s'] == r['memory_s']  # a tiny product is memory bound
  np.testing.assert_allclose(r['published_mfu'], costs['flops'] / (989e12 * 1e-3))


def test_roofline_table_tiny(capsys):
  rows = benchmarks.roofline_table('h100', scale='tiny')
  assert [r['label'] for r in rows] == ['SMT (window)', 'DMT', 'BPTT', 'SMT (parallel)']
  for r in rows:
    assert r['flops'] > 0 and r['matmul_bytes'] > 0 and r['floor_s'] > 0 and r['bound'] in ('compute', 'memory')
  assert 'published_mfu' in rows[0] and 'published_mfu' in rows[1] and 'published_mfu' not in rows[2]
  assert 'floor' in capsys.readouterr().out


@pytest.mark.slow
def test_gpu_check_runs_tiny(capsys):
  out = benchmarks.gpu_check('tiny', run_seconds=120, enough_rates=2)  # the run stops once it has logged two rates
  assert out['run']['steps'] > 0 and out['run']['steps_per_s'] > 0
  assert out['memory']['peak'] > 0 and out['smt']['step_ms'] > 0 and out['dmt']['step_ms'] > 0
  text = capsys.readouterr().out
  for row in ('paper_smt step', 'paper_dmt iteration', 'BPTT / parallel SMT at T=1024', 'T=8192', 'experiments.run'):
    assert row in text


@pytest.mark.slow
def test_bench_parallel_scan_runs_tiny():
  """experiments.bench_rollout --scan times parallel-scan and sequential BPTT of the linear cells."""
  import subprocess
  import sys

  from tests.conftest import ROOT
  r = subprocess.run([sys.executable, '-m', 'experiments.bench_rollout', '--scan', '--scan_lengths=8,16', '--batch=2',
                      '--d_model=16', '--num_mem_tokens=2', '--depth=1', '--repeats=1'], cwd=ROOT, capture_output=True,
                     text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  assert r.stdout.count('sequential / scan') == 4, r.stdout


@pytest.mark.slow
def test_length_table_and_sampling_study_run_tiny(capsys):
  """experiments.bench --length_table (every column, a cell over the memory limit reported, not run; the 'cpu'
  size's columns are valid configs) and experiments.bench_sampling's study (benchmarks.sampling_study) at test
  size."""
  from tests.conftest import tiny_config
  for col, c in benchmarks.length_configs('cpu', 8, 2, 'tiny').items():
    config_lib.validate(c)
    assert (c.data.name, c.data.seq_len, c.method == 'bptt') == ('tinystories', 8, col.startswith('bptt')), col
  rows = benchmarks.length_table(['retrieval'], [8], band=2, max_gib=16.0, seconds=0.2, scale='tiny')
  row = rows[('retrieval', 8)]
  assert set(row) == set(benchmarks.LENGTH_COLUMNS) and all(r['step_ms'] > 0 for r in row.values())
  f = row['smt']['network_flops']
  assert f['encoder'] > 0 and f['decoder'] > 0 and f['cell'] > 0
  assert row['bptt']['network_flops']['encoder'] == 0  # BPTT: the cell and its readout only
  assert '| 8 |' in capsys.readouterr().out
  skipped = benchmarks.length_table(['retrieval'], [8], band=2, max_gib=1e-6, seconds=0.2,
                                    scale='tiny')[('retrieval', 8)]
  assert all(r['skipped'] and r['peak_gb'] > 0 for r in skipped.values())
  c = tiny_config()
  c.num_steps = 2
  for field in ('num_decoder_samples', 'num_transitions'):
    out = benchmarks.sampling_study(c, field, [2, 0], pretrain_steps=2, num_batches=2, draws=2, steps=1, repeats=1)
    assert [r['S'] for r in out] == [0, 2] and out[0]['variance_ratio'] == 1.0 and out[1]['variance_ratio'] > 0


def test_regression_guard_reads_its_record_and_names_a_slower_step(tmp_path):
  """The guard's record is the last column of docs/benchmarks.md's table; a step slower than its record by
  more than the tolerance is named, one within it is not (tiny scale: the same code paths)."""
  doc = tmp_path / 'benchmarks.md'
  doc.write_text(f'# x\n\n{benchmarks.RECORD_HEADING}\n\n| step | ms | normalised |\n| --- | --- | --- |\n'
                 '| BPTT, cpu | 3.0 | 1e-9 |\n| DMT, cpu | 3.0 | 1e9 |\n| not a step | 1 | 2 |\n\n## Next\n'
                 '| window SMT, cpu | 1 | 5 |\n')
  assert benchmarks.read_record(doc) == {'BPTT, cpu': 1e-9, 'DMT, cpu': 1e9}
  out = benchmarks.regression(doc, scale='tiny', steps=1, repeats=1, only=('BPTT, cpu', 'DMT, cpu'))
  assert [r['name'] for r in out['rows']] == ['DMT, cpu', 'BPTT, cpu'] and out['slower'] == ['BPTT, cpu']
  assert all(r['normalised'] == pytest.approx(r['step_ms'] / 1e3 * r['matmul_gflops']) for r in out['rows'])
