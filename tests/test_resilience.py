"""Runs that survive: restore fallback past damaged checkpoints, SIGTERM/SIGINT, and a kill-and-resume soak."""

import glob
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from smtjax import checkpoint as ckpt_lib
from smtjax import metrics as metrics_lib
from smtjax import train
from smtjax.metrics import read_metrics
from tests.conftest import tiny_config, xla_flags

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _strip(records):
  return metrics_lib.without_timings(records)


def _assert_same_run(a: str, b: str):
  """Every logged metric (but the timing) and the final parameters of two workdirs are equal."""
  ra, rb = _strip(read_metrics(a)), _strip(read_metrics(b))
  steps = [r['step'] for r in rb]
  assert steps == sorted(set(steps)), steps  # no duplicate or out-of-order step
  assert ra == rb
  _, pa = train.load_params(a)
  _, pb = train.load_params(b)
  jax.tree.map(np.testing.assert_array_equal, pa, pb)


@pytest.fixture(scope='module')
def full_run(tmp_path_factory):
  """An uninterrupted tiny run: 8 steps, checkpoints at 4 and 8."""
  wd = str(tmp_path_factory.mktemp('full') / 'run')
  train.train_and_evaluate(tiny_config(), wd)
  return wd


def test_load_params_reads_the_parameters_alone(full_run):
  """No optimizer is built or its state read: a config whose optimizer state has another structure (no gradient
  clipping, the teacher frozen) loads the trained parameters all the same."""
  config, params = train.load_params(full_run)
  other = config.copy_and_resolve_references()
  other.optim.grad_clip, other.smt.trainable = 0.0, 'rnn'
  _, same = train.load_params(full_run, config=other)
  jax.tree.map(np.testing.assert_array_equal, params, same)


def _files(directory: str) -> list[str]:
  return sorted(f for f in glob.glob(os.path.join(directory, '**'), recursive=True) if os.path.isfile(f))


def _garbage(directory: str):
  rng = np.random.default_rng(0)
  for f in _files(directory):
    pathlib.Path(f).write_bytes(rng.integers(0, 256, max(16, os.path.getsize(f)), np.uint8).tobytes())


def _truncate(directory: str):
  for f in _files(directory):
    with open(f, 'r+b') as fh:
      fh.truncate(os.path.getsize(f) // 2)


def _garbage_arrays(directory: str):
  """Only the array chunks: the metadata still reads, the tensorstore reads fail."""
  rng = np.random.default_rng(1)
  for f in glob.glob(os.path.join(directory, 'state', '**', 'd', '*'), recursive=True):
    pathlib.Path(f).write_bytes(rng.integers(0, 256, os.path.getsize(f), np.uint8).tobytes())


CORRUPTIONS = {
    'garbage': _garbage,  # the case: every file overwritten with random bytes
    'truncated': _truncate,
    'garbage_arrays': _garbage_arrays,
    'missing_state': lambda d: shutil.rmtree(os.path.join(d, 'state')),
    'missing_data': lambda d: shutil.rmtree(os.path.join(d, 'data')),
}


@pytest.mark.parametrize('corruption', sorted(CORRUPTIONS))
def test_damaged_latest_checkpoint_falls_back_and_then_equals_uninterrupted(full_run, tmp_path, corruption, caplog):
  wd = str(tmp_path / 'run')
  shutil.copytree(full_run, wd)
  newest = os.path.join(wd, 'checkpoints', '8')
  CORRUPTIONS[corruption](newest)
  damaged = {os.path.relpath(f, newest): pathlib.Path(f).read_bytes() for f in _files(newest)}

  with caplog.at_level('WARNING'):
    train.train_and_evaluate(tiny_config(), wd)  # falls back to step 4, trains 5..8 again
  log = caplog.text
  assert 'checkpoint step 8' in log and 'cannot be restored' in log
  aside = glob.glob(os.path.join(wd, 'checkpoints', '8.corrupt-*'))
  assert len(aside) == 1 and aside[0] in log  # set aside, not deleted, and the log says where
  assert {os.path.relpath(f, aside[0]): pathlib.Path(f).read_bytes() for f in _files(aside[0])} == damaged
  assert sorted(os.listdir(os.path.join(wd, 'checkpoints'))) == sorted(['4', '8', os.path.basename(aside[0])])
  _assert_same_run(full_run, wd)


def test_no_checkpoint_restores_fails_naming_each_and_keeps_them(full_run, tmp_path):
  wd = str(tmp_path / 'run')
  shutil.copytree(full_run, wd)
  _garbage(os.path.join(wd, 'checkpoints', '8'))
  _truncate(os.path.join(wd, 'checkpoints', '4'))
  before = {f: pathlib.Path(f).read_bytes() for f in _files(wd)}
  with pytest.raises(ckpt_lib.CheckpointError, match=r'(?s)no checkpoint .* can be restored.*step 8: .*step 4: '):
    train.train_and_evaluate(tiny_config(), wd)
  # Nothing renamed, rewritten or deleted: the next run gives the same error rather than restarting at 0.
  assert {f: pathlib.Path(f).read_bytes() for f in _files(wd)} == before


TINY_CLI = ['-m', 'experiments.run', '--config=configs/retrieval.py:small', '--config.data.seq_len=8',
            '--config.smt.future=8', '--config.model.d_model=16', '--config.model.num_heads=2',
            '--config.model.enc_depth=1', '--config.model.dec_depth=1', '--config.model.cell_depth=1',
            '--config.batch_size=8', '--config.num_eval_batches=1', '--config.progress_bar=False',
            '--config.metrics_flush_secs=0']  # metrics.jsonl rewritten at every step: the test watches it


def _wait_for_records(wd: pathlib.Path, n: int, proc, timeout: float = 240):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if len(read_metrics(str(wd))) >= n:
      return
    if proc.poll() is not None:
      raise AssertionError(f'exited early ({proc.returncode}): {proc.communicate()[1][-3000:]}')
    time.sleep(0.01)
  proc.kill()
  raise AssertionError('no progress')


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT])
def test_signal_finishes_step_saves_exits_0_and_resume_equals_uninterrupted(tmp_path, sig):
  wd = tmp_path / 'run'
  # Checkpoints only at 100 and 200: the step the signal stops at gets its own checkpoint.
  cmd = [sys.executable, *TINY_CLI, f'--workdir={wd}', '--config.num_steps=200', '--config.log_every=1',
         '--config.eval_every=100', '--config.checkpoint_every=100']
  proc = subprocess.Popen(cmd, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  _wait_for_records(wd, 3, proc)
  proc.send_signal(sig)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-3000:]
  assert 'Traceback' not in err, err[-3000:]
  name = sig.name
  assert f'Received {name}' in err
  stopped = int(out.split(f'stopped by {name} after step ')[1].split(':')[0])
  assert 3 <= stopped < 100 and 'final:' not in out
  assert sorted(os.listdir(wd / 'checkpoints')) == [str(stopped)]  # saved at the step it stopped
  assert [r['step'] for r in read_metrics(str(wd))] == list(range(1, stopped + 1))  # every step's metrics

  r = subprocess.run(cmd, cwd=ROOT, text=True, capture_output=True, timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'Resumed from' in r.stderr and f'at step {stopped}' in r.stderr and 'final:' in r.stdout

  import ml_collections
  config = ml_collections.ConfigDict(json.loads((wd / 'config.json').read_text()))
  ref = str(tmp_path / 'uninterrupted')
  train.train_and_evaluate(config, ref)
  _assert_same_run(ref, str(wd))


@pytest.mark.slow
def test_soak_three_kills_equal_an_uninterrupted_run(tmp_path):
  """smtjax.soak (experiments/soak.py) at CI size: SIGKILL in start-up, mid-training and during a checkpoint save."""
  from smtjax import soak
  s = soak.soak(str(tmp_path / 'soak'), kills=3, seed=1, verbose=False)
  assert s['kills'] == 3 and s['by_mode'] == {'save': 1, 'step': 1, 'startup': 1}, s
  assert s['steps_ok'] and s['metrics_equal'] and s['params_equal'], s
  assert s['identical']


@pytest.mark.slow
def test_sigterm_to_one_of_two_processes_stops_both_at_the_same_step(tmp_path):
  """Two processes (jax.distributed on localhost): SIGTERM to process 1 alone; JAX's preemption service
  makes both stop after the same step, save it together and exit 0."""
  import socket
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  wd = tmp_path / 'run'
  cmd = [sys.executable, *TINY_CLI, f'--workdir={wd}', '--config.num_steps=300', '--config.log_every=1',
         '--config.eval_every=150', '--config.checkpoint_every=150', f'--coordinator_address=127.0.0.1:{port}',
         '--num_processes=2']
  env = {**os.environ, 'XLA_FLAGS': xla_flags()}
  procs = [subprocess.Popen([*cmd, f'--process_id={i}'], cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE) for i in range(2)]
  try:
    _wait_for_records(wd, 3, procs[0], timeout=280)
    procs[1].send_signal(signal.SIGTERM)
    outs = [p.communicate(timeout=200) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  stops = [int(out.split('after step ')[1].split(':')[0]) for out, _ in outs]
  assert stops[0] == stops[1] < 150, stops
  assert sorted(os.listdir(wd / 'checkpoints')) == [str(stops[0])]
  assert [r['step'] for r in read_metrics(str(wd))] == list(range(1, stops[0] + 1))
