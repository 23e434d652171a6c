"""Bad inputs: each raises an smtjax error naming the field or file (never a raw JAX or Orbax error), and
nothing an earlier run saved (checkpoints, metrics, config.json) is lost.

Every case runs against a copy of a trained workdir (4 steps, a checkpoint at step 4), continuing to 8 steps.
Tests run as root, for whom chmod does not make a directory read-only: the read-only workdir and the full
disk are simulated by writers that raise PermissionError / OSError(ENOSPC).
"""

import errno
import glob
import json
import os
import pathlib
import shutil
import subprocess
import sys

import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
from etils import epath

from smtjax import checkpoint as ckpt_lib
from smtjax import config as config_lib
from smtjax import train
from smtjax.data import DataError
from tests.conftest import tiny_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMTJAX_ERRORS = (config_lib.ConfigError, DataError, ckpt_lib.CheckpointError, ckpt_lib.WorkdirError)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  wd = tmp_path_factory.mktemp('trained') / 'run'
  c = tiny_config()
  c.num_steps = 4
  train.train_and_evaluate(c, str(wd))
  return wd


def _snapshot(wd: pathlib.Path) -> dict[str, bytes]:
  """Every saved file but TensorBoard's (a new run opens a new event file; old ones stay)."""
  return {os.path.relpath(f, wd): pathlib.Path(f).read_bytes()
          for f in glob.glob(str(wd / '**'), recursive=True) if os.path.isfile(f) and '/tensorboard/' not in f}


def _assert_nothing_lost(before: dict[str, bytes], wd: pathlib.Path):
  after = _snapshot(wd)
  for name, data in before.items():
    assert name in after, f'{name} was lost'
    if name == 'metrics.jsonl':  # a run that got further may append records, never drop saved ones
      assert after[name].startswith(data), 'metrics.jsonl lost records'
    elif name == 'environment.json':  # one entry per start of the run
      old = json.loads(data)
      assert json.loads(after[name])[:len(old)] == old, 'environment.json lost entries'
    elif name == 'config.json' and after[name] != data:  # a resumed run rewrites it (num_steps 4 -> 8)...
      saved, now = json.loads(data), json.loads(after[name])
      for field in config_lib.checked_model_fields(resuming=False):  # ...but never with another architecture
        section, name = field.split('.')
        assert saved[section][name] == now[section][name], field
    else:
      assert after[name] == data, f'{name} changed'


def _config(**fields):
  c = tiny_config()
  c.num_steps = 8
  for k, v in fields.items():
    node = c
    *path, last = k.split('.')
    for p in path:
      node = node[p]
    node[last] = v
  return c


def _data_config(name: str, path, **options):
  c = _config()
  c.data.name = name
  c.data.path = str(path)
  c.data.options = ml_collections.ConfigDict(options)
  return c


def _npz(path: pathlib.Path, **arrays) -> pathlib.Path:
  np.savez(path, **arrays)
  return path


def _npy(path: pathlib.Path, a) -> pathlib.Path:
  np.save(path, a)
  return path


def _train(config):
  return lambda wd: train.train_and_evaluate(config, str(wd))


# ----------------------------------------------------------------------------------------------- cases
# Each: (tmp_path, workdir, monkeypatch) -> a function of the workdir that must raise; and the pattern the
# message must contain (the field or the file).

def c_num_steps(tmp, wd, mp):
  return _train(_config(num_steps=0)), 'config.num_steps'


def c_heads(tmp, wd, mp):
  return _train(_config(**{'model.d_model': 15})), 'config.model.d_model'


def c_warmup(tmp, wd, mp):
  return _train(_config(**{'optim.warmup_frac': 1.5})), 'config.optim.warmup_frac'


def c_mesh(tmp, wd, mp):
  return _train(_config(**{'mesh.fsdp': 3})), 'config.mesh.fsdp'


def c_dtype(tmp, wd, mp):
  return _train(_config(**{'model.dtype': 'float16'})), 'config.model.dtype'


def c_keep(tmp, wd, mp):
  return _train(_config(max_checkpoints_to_keep=0)), 'config.max_checkpoints_to_keep'


def c_unknown_option(tmp, wd, mp):
  return _train(_config(**{'data.options.bogus': 1})), 'config.data.options.bogus'


def c_dmt_without_init(tmp, wd, mp):
  return _train(_config(method='dmt', **{'dmt.context': 2, 'dmt.rollout': 4, 'dmt.every': 2})), 'config.init_from'


def c_init_from_missing(tmp, wd, mp):
  return _train(_config(init_from=str(tmp / 'nope'))), 'config.init_from'


def c_unknown_variant(tmp, wd, mp):
  return (lambda _: config_lib.load_config('configs/retrieval.py:nope')), "unknown variant 'nope'"


def c_tokens_float(tmp, wd, mp):
  f = _npy(tmp / 'float.npy', np.linspace(0, 1, 500, dtype=np.float32))
  return _train(_data_config('tokens', f)), f'{f}: .*dtype float32'


def c_tokens_2d(tmp, wd, mp):
  f = _npy(tmp / 'two_d.npy', np.zeros((20, 30), np.int32))
  return _train(_data_config('tokens', f)), f'{f}: expected a 1-D token array'


def c_tokens_empty(tmp, wd, mp):
  f = _npy(tmp / 'empty.npy', np.zeros((0,), np.int32))
  return _train(_data_config('tokens', f)), f'{f}: the token array is empty'


def c_tokens_vocab(tmp, wd, mp):
  f = _npy(tmp / 'big.npy', np.arange(500, dtype=np.int32) % 20)
  return _train(_data_config('tokens', f, vocab_size=10)), f'{f}: .*outside the vocabulary'


def c_empty_file(tmp, wd, mp):
  f = tmp / 'empty.npz'
  f.write_bytes(b'')
  return _train(_data_config('arrays', f)), f'{f}: not a readable .npz'


def c_arrays_seq_len(tmp, wd, mp):
  f = _npz(tmp / 'long.npz', x=np.zeros((10, 20), np.int32))
  return _train(_data_config('arrays', f)), f'{f}: .*config.data.seq_len'


def c_arrays_y_shape(tmp, wd, mp):
  f = _npz(tmp / 'y.npz', x=np.zeros((10, 8), np.int32), y=np.zeros((10, 7), np.int32))
  return _train(_data_config('arrays', f)), f'{f}: y has shape'


def c_text_encoding(tmp, wd, mp):
  d = tmp / 'stories'
  d.mkdir()
  (d / 'train.txt').write_text('Once upon a time there was a cat. ' * 50, encoding='utf-16')
  return (_train(_data_config('tinystories', d, cache_dir=str(tmp / 'cache'))),
          f'{d / "train.txt"}: not a (UTF-8 )?text file')


def c_data_path_missing(tmp, wd, mp):
  return _train(_data_config('tokens', tmp / 'missing.npy')), 'config.data.path: .*does not exist'


def c_other_architecture(tmp, wd, mp):
  return _train(_config(**{'model.d_model': 32})), 'config.model.d_model'


def c_other_initial_memory(tmp, wd, mp):
  # a learned initial memory adds a parameter the saved run lacks; the check names the field first
  return _train(_config(**{'model.initial_memory': 'learned'})), "config.model.initial_memory: saved 'encoder'"


def c_other_cell_options(tmp, wd, mp):
  return _train(_config(**{'model.cell_options': ml_collections.ConfigDict({'r_min': 0.5})})), \
      'config.model.cell_options'


def c_other_architecture_unnoticed(tmp, wd, mp):
  """config.json claims the new architecture (e.g. copied by hand): the checkpoint itself does not fit."""
  c = _config(**{'model.d_model': 32})
  (wd / 'config.json').write_text(c.to_json_best_effort(indent=2, sort_keys=True))
  return _train(c), r'(?s)no checkpoint in .*/checkpoints can be restored.*step 4: '


def c_config_json_garbage(tmp, wd, mp):
  (wd / 'config.json').write_bytes(b'\x89PNG garbage \xff\xfe')
  return _train(_config()), f'{wd / "config.json"} is unreadable'


def c_metrics_garbage_line(tmp, wd, mp):
  lines = (wd / 'metrics.jsonl').read_text().splitlines(keepends=True)
  (wd / 'metrics.jsonl').write_text(lines[0] + '{"step": 2, "loss": \n' + ''.join(lines[1:]))
  return _train(_config()), f'{wd / "metrics.jsonl"}: line 2 is not a metrics record'


def c_workdir_is_file(tmp, wd, mp):
  f = tmp / 'a_file'
  f.write_text('not a directory')
  return (lambda _: train.train_and_evaluate(_config(), str(f))), f'workdir {f} is a file'


def c_read_only_workdir(tmp, wd, mp):
  real_open = open

  def read_only_open(file, mode='r', *a, **k):
    if any(m in mode for m in 'wax+') and str(file).startswith(str(wd)):
      raise PermissionError(errno.EACCES, 'Permission denied', str(file))
    return real_open(file, mode, *a, **k)
  mp.setattr('builtins.open', read_only_open)
  return _train(_config()), f'cannot write {wd}/.*Permission denied'


def c_disk_full_metrics(tmp, wd, mp):
  # metrics.jsonl is written whole through a temporary file (smtjax.workdir.write_text): the file system
  # fills up at the third write of it; the complete file written before stays.
  path_cls = type(epath.Path(str(tmp)))
  real_write, writes = path_cls.write_text, []

  def filling_write(self, data, *a, **k):
    if self.name.startswith('.metrics.jsonl.tmp'):
      writes.append(self)
      if len(writes) > 2:
        raise OSError(errno.ENOSPC, 'No space left on device', str(self))
    return real_write(self, data, *a, **k)
  mp.setattr(path_cls, 'write_text', filling_write)
  return _train(_config(metrics_flush_secs=0.0)), f'cannot write {wd / "metrics.jsonl"}: .*No space left on device'


def c_disk_full_checkpoint(tmp, wd, mp):
  def full(self, step, *a, **k):
    raise OSError(errno.ENOSPC, 'No space left on device', str(self.directory))
  mp.setattr(ocp.CheckpointManager, 'save', full)
  return _train(_config()), f'cannot write checkpoint step 8 in {wd / "checkpoints"}: .*No space left'


CASES = [c_num_steps, c_heads, c_warmup, c_mesh, c_dtype, c_keep, c_unknown_option, c_dmt_without_init,
         c_init_from_missing, c_unknown_variant, c_tokens_float, c_tokens_2d, c_tokens_empty, c_tokens_vocab,
         c_empty_file, c_arrays_seq_len, c_arrays_y_shape, c_text_encoding, c_data_path_missing,
         c_other_architecture, c_other_initial_memory, c_other_cell_options, c_other_architecture_unnoticed,
         c_config_json_garbage, c_metrics_garbage_line,
         c_workdir_is_file, c_read_only_workdir, c_disk_full_metrics, c_disk_full_checkpoint]


@pytest.mark.parametrize('case', CASES, ids=[c.__name__[2:] for c in CASES])
def test_bad_input_raises_a_clear_error_and_loses_nothing(trained, tmp_path, monkeypatch, case):
  wd = tmp_path / 'run'
  shutil.copytree(trained, wd)
  run, pattern = case(tmp_path, wd, monkeypatch)
  before = _snapshot(wd)
  with pytest.raises(SMTJAX_ERRORS, match=pattern) as info:
    run(wd)
  assert type(info.value).__module__.startswith('smtjax'), type(info.value)
  monkeypatch.undo()
  _assert_nothing_lost(before, wd)
  assert not glob.glob(str(wd / 'checkpoints' / '*.corrupt-*'))  # a bad input is not a damaged checkpoint


# experiments.run's flags for the `trained` fixture's config (tiny_config), continuing to 8 steps.
CLI_ARGS = ['--config=configs/retrieval.py:small', '--config.data.seq_len=8', '--config.smt.future=8',
            '--config.smt.context=4', '--config.model.d_model=16', '--config.model.num_heads=2',
            '--config.model.enc_depth=1', '--config.model.dec_depth=1', '--config.model.cell_depth=1',
            '--config.batch_size=8', '--config.num_steps=8', '--config.log_every=1', '--config.eval_every=4',
            '--config.checkpoint_every=4', '--config.num_eval_batches=1', '--config.progress_bar=False']


def test_cli_reports_bad_inputs_in_one_line(trained, tmp_path):
  """Through experiments.run: `error: ...` naming the file, exit status 1, no traceback (not even
  tensorstore's 'Event loop is closed' noise after a failed restore)."""
  wd = tmp_path / 'run'
  shutil.copytree(trained, wd)
  for step_dir in glob.glob(str(wd / 'checkpoints' / '[0-9]*')):
    for f in glob.glob(step_dir + '/**', recursive=True):
      if os.path.isfile(f):
        pathlib.Path(f).write_bytes(os.urandom(max(16, os.path.getsize(f))))
  for workdir, pattern in [(wd, 'error: no checkpoint in'), (tmp_path / 'run' / 'config.json', 'is a file')]:
    r = subprocess.run([sys.executable, '-m', 'experiments.run', *CLI_ARGS, f'--workdir={workdir}'], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stderr[-3000:]
    assert pattern in r.stderr and 'Traceback' not in r.stderr and 'Event loop' not in r.stderr, r.stderr[-3000:]
  assert json.loads((wd / 'config.json').read_text())['model']['d_model'] == 16


# experiments.run on a disk that fills while the checkpoint of step 8 is written in the background: the first
# array's write fails, the others are still in flight in tensorstore when Orbax's event loop closes.
_FULL_DISK_RUN = """
import errno
from absl import app
from orbax.checkpoint._src.serialization import serialization
from experiments import run

write, calls = serialization.async_serialize_from_host, []

async def filling_write(*args, **kwargs):
  calls.append(None)
  if len(calls) == 1:
    raise OSError(errno.ENOSPC, 'No space left on device')
  return await write(*args, **kwargs)

serialization.async_serialize_from_host = filling_write
app.run(run.main)
"""


def test_cli_reports_a_full_disk_in_one_line(trained, tmp_path):
  """A checkpoint write that fills the disk: the last line names the full disk, the checkpoint directory and
  the checkpoint kept; no traceback before it (Orbax's logged failures, tensorstore's 'Event loop is closed'
  callbacks) and nothing after it; the earlier checkpoint and metrics are intact."""
  wd = tmp_path / 'run'
  shutil.copytree(trained, wd)
  before = _snapshot(wd)
  args = [*CLI_ARGS, '--config.model.num_mem_tokens=2', '--config.optim.lr=0.003', '--config.optim.schedule=constant']
  r = subprocess.run([sys.executable, '-c', _FULL_DISK_RUN, *args, f'--workdir={wd}'], cwd=ROOT,
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 1, r.stderr[-3000:]
  assert 'Event loop is closed' not in r.stderr and 'Traceback' not in r.stderr, r.stderr[-3000:]
  assert r.stderr.strip().splitlines()[-1] == (
      f'error: cannot write a checkpoint in {wd / "checkpoints"}: No space left on device (the disk is full) '
      '(earlier checkpoints are kept: [4])'), r.stderr[-3000:]
  _assert_nothing_lost(before, wd)
