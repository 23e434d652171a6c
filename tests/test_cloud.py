"""Workdirs on an object store (a fake gs:// bucket), the workdir lock, and the static rule that no code
touches a workdir through os.path / open."""

import ast
import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from etils import epath
from etils.epath import backend as epath_backend
from etils.epath import gpath
from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem

from smtjax import metrics as metrics_lib
from smtjax import train
from smtjax import workdir as workdir_lib
from smtjax.metrics import MetricWriter, read_metrics
from tests.conftest import tiny_config
from tests.test_train import Interrupted

ROOT = pathlib.Path(__file__).resolve().parents[1]


class _Bucket(DirFileSystem):
  """gs://<bucket>/<key> stored under a local directory, with an object store's limits: no append."""

  def _join(self, path):
    strip = lambda p: p.split('://', 1)[-1] if isinstance(p, str) else p
    return super()._join([strip(p) for p in path] if isinstance(path, list) else strip(path))

  def open(self, path, mode='rb', *args, **kwargs):
    if 'a' in mode or '+' in mode:
      raise NotImplementedError(f'object stores cannot open {path} in mode {mode!r}')
    self.opened.append((str(path), mode))
    return super().open(path, mode, *args, **kwargs)


class _FakeGCSBackend(epath_backend._FileSystemSpecBackend):  # pylint: disable=protected-access
  def __init__(self, fs):
    self._fs = fs

  def fs(self, path):
    return self._fs


@pytest.fixture
def fake_gcs(tmp_path, monkeypatch):
  """gs:// paths reach a fake bucket under tmp_path/store: epath (every non-Orbax file, and Orbax's
  directory and metadata operations) through an fsspec filesystem, Orbax's TensorStore array data through
  TensorStore's file driver at the same place (TensorStore's own GCS driver would need the network).
  The working directory is tmp_path/cwd, so a path mistaken for a local one shows up there as `gs:`."""
  from orbax.checkpoint._src.path import gcs_utils
  store = tmp_path / 'store'
  store.mkdir()
  fs = _Bucket(path=str(store), fs=LocalFileSystem())
  fs.opened = []
  monkeypatch.setitem(gpath._PREFIX_TO_BACKEND, 'gs', _FakeGCSBackend(fs))  # pylint: disable=protected-access
  monkeypatch.setattr(gpath, '_is_tf_installed', lambda: False)
  monkeypatch.setattr(gcs_utils, 'is_hierarchical_namespace_enabled', lambda path: False)

  def kvstore(path):
    bucket, key = gcs_utils.parse_gcs_path(path, add_trailing_slash=False)
    return {'driver': 'file', 'path': str(store / bucket / key)}
  monkeypatch.setattr(gcs_utils, 'get_kvstore_for_gcs', kvstore)
  cwd = tmp_path / 'cwd'
  cwd.mkdir()
  monkeypatch.chdir(cwd)
  return store, fs


def test_fake_bucket_is_an_object_store(fake_gcs):
  store, _ = fake_gcs
  p = epath.Path('gs://bucket/a/b.txt')
  p.parent.mkdir(parents=True, exist_ok=True)
  p.write_text('hi')
  assert (store / 'bucket' / 'a' / 'b.txt').read_text() == 'hi'
  assert str(workdir_lib.as_path('gs://bucket/a')) == 'gs://bucket/a'  # not made local
  with pytest.raises(NotImplementedError):
    p.open('a')


def test_train_kill_resume_on_object_store_equals_uninterrupted_run(fake_gcs, monkeypatch):
  """config.json, metrics.jsonl, TensorBoard events, the lock and Orbax checkpoints all land in the bucket;
  a run killed after checkpoint 4 resumes there, dropping the metric lines past it, and ends equal."""
  store, fs = fake_gcs
  c = tiny_config()
  train.train_and_evaluate(c, 'gs://bucket/full')

  def kill_after_6(step, state):
    if step == 6:
      raise Interrupted()

  # Flush metrics at every write, so the killed run leaves lines past its checkpoint to be dropped.
  c.metrics_flush_secs = 0.0
  with pytest.raises(Interrupted):
    train.train_and_evaluate(c, 'gs://bucket/part', hooks=[kill_after_6])
  assert max(r['step'] for r in read_metrics('gs://bucket/part')) >= 5
  assert not epath.Path('gs://bucket/part/lock.json').exists()  # released on the way out
  train.train_and_evaluate(c, 'gs://bucket/part')

  strip = metrics_lib.without_timings
  a, b = strip(read_metrics('gs://bucket/full')), strip(read_metrics('gs://bucket/part'))
  assert [r['step'] for r in a] == [r['step'] for r in b] == list(range(1, 9))
  assert a == b
  _, pa = train.load_params('gs://bucket/full')
  _, pb = train.load_params('gs://bucket/part')
  jax.tree.map(np.testing.assert_array_equal, pa, pb)

  run = store / 'bucket' / 'part'
  assert json.loads((run / 'config.json').read_text())['model']['d_model'] == 16
  assert sorted(p.name for p in (run / 'checkpoints').iterdir() if p.name.isdigit()) == ['4', '8']
  assert any('tfevents' in p.name for p in (run / 'tensorboard').iterdir())
  assert any('checkpoints/4' in path for path, _ in fs.opened)  # Orbax's metadata went through epath too
  assert os.listdir('.') == []  # nothing local: no `gs:` folder in the working directory


def test_tensorboard_reads_the_event_files(tmp_path):
  """Event files written whole, one per flush, read back in order by TensorBoard's own loader."""
  from tensorboard.backend.event_processing import event_accumulator
  w = MetricWriter(tmp_path, flush_every_s=1e9)
  w.write(1, {'loss': 2.0})
  w.flush()
  w.write(2, {'loss': 1.5})
  w.close()
  assert len(list((tmp_path / 'tensorboard').iterdir())) == 2
  acc = event_accumulator.EventAccumulator(str(tmp_path / 'tensorboard'))
  acc.Reload()
  assert [(e.step, e.value) for e in acc.Scalars('loss')] == [(1, 2.0), (2, 1.5)]
  assert [r['step'] for r in read_metrics(tmp_path)] == [1, 2]
  MetricWriter(tmp_path, resume_step=1).close()  # a resume at step 1 drops step 2's line
  assert [r['step'] for r in read_metrics(tmp_path)] == [1]


# ------------------------------------------------------------------------------------------- lock

def _write_lock(workdir, host, pid, age_s=0.0):
  (pathlib.Path(workdir) / workdir_lib.LOCK_NAME).write_text(json.dumps({'host': host, 'pid': pid,
                                                                          'time': time.time() - age_s}))


def _dead_pid() -> int:
  p = subprocess.Popen([sys.executable, '-c', 'pass'])
  p.wait()
  return p.pid


def test_lock_refuses_a_live_holder_and_takes_over_stale_ones(tmp_path):
  host = socket.gethostname()
  _write_lock(tmp_path, host, os.getppid())  # a live process on this host
  with pytest.raises(workdir_lib.WorkdirLockedError, match=f'host {host}, pid {os.getppid()}'):
    workdir_lib.WorkdirLock(tmp_path).acquire()
  _write_lock(tmp_path, 'other-host', 12345, age_s=5)  # another host, refreshed 5 s ago
  with pytest.raises(workdir_lib.WorkdirLockedError, match='other-host'):
    workdir_lib.WorkdirLock(tmp_path).acquire()
  for host_pid_age in ((host, _dead_pid(), 0), ('other-host', 12345, 3600)):  # dead pid; old heartbeat
    _write_lock(tmp_path, *host_pid_age)
    lock = workdir_lib.WorkdirLock(tmp_path).acquire()
    rec = json.loads((tmp_path / 'lock.json').read_text())
    assert (rec['host'], rec['pid']) == (host, os.getpid())
    lock.release()
    assert not (tmp_path / 'lock.json').exists()


def test_lock_heartbeat_refreshes_the_time(tmp_path):
  lock = workdir_lib.WorkdirLock(tmp_path, heartbeat_s=0.05).acquire()
  t0 = json.loads((tmp_path / 'lock.json').read_text())['time']
  time.sleep(0.3)
  t1 = json.loads((tmp_path / 'lock.json').read_text())['time']
  lock.release()
  assert t1 > t0


def test_training_refuses_a_workdir_held_by_a_live_run(tmp_path):
  _write_lock(tmp_path, socket.gethostname(), os.getppid())
  with pytest.raises(workdir_lib.WorkdirLockedError, match='in use by another run'):
    train.train_and_evaluate(tiny_config(), str(tmp_path))
  assert not (tmp_path / 'checkpoints').exists() and not (tmp_path / 'metrics.jsonl').exists()
  assert workdir_lib.lock(tmp_path, process_index=1).__enter__() is not None  # other processes take no lock


def test_default_workdir_differs_per_config_file_and_variant():
  names = {workdir_lib.default_workdir(f, v) for f in ('configs/retrieval.py', 'configs/copy.py', 'x/retrieval2.py')
           for v in ('', 'small', 'gpu')}
  assert len(names) == 9
  assert workdir_lib.default_workdir('configs/retrieval.py', 'small') == 'workdirs/retrieval_small'


# ------------------------------------------------------------------------------------ static rule

# Dataset readers and the token cache work on local files by design (data paths, not workdirs); config
# files are local source files; the soak kills and restarts local processes in a local scratch folder.
ALLOWED = {'smtjax/data/text.py', 'smtjax/data/images.py', 'smtjax/data/download.py', 'smtjax/data/stream.py',
           'smtjax/data/arrays.py', 'smtjax/config.py', 'smtjax/logs.py', 'experiments/bench_data.py',
           'smtjax/soak.py'}
_OS_FILE_CALLS = {'makedirs', 'mkdir', 'replace', 'rename', 'remove', 'unlink', 'listdir', 'scandir', 'rmdir',
                  'walk'}


def _violations(path: pathlib.Path) -> list[str]:
  out = []
  for node in ast.walk(ast.parse(path.read_text())):
    where = f'{path.relative_to(ROOT)}:{getattr(node, "lineno", 0)}'
    if isinstance(node, ast.Call):
      f = node.func
      if isinstance(f, ast.Name) and f.id == 'open':
        out.append(f'{where}: builtin open()')
      if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == 'os' \
          and f.attr in _OS_FILE_CALLS:
        out.append(f'{where}: os.{f.attr}()')
      if isinstance(f, ast.Attribute) and (f.attr in ('savefig', 'tofile') or (
          f.attr in ('save', 'savez', 'savez_compressed') and isinstance(f.value, ast.Name) and f.value.id == 'np')):
        out.append(f'{where}: {ast.unparse(f)}() writes a path without epath')
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == 'os' \
        and node.attr == 'path':
      out.append(f'{where}: os.path')
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
      if any(n in ('pathlib', 'shutil', 'os.path') for n in names):
        out.append(f'{where}: imports {", ".join(names)}')
  return out


def test_no_code_touches_workdirs_through_os_path_or_open():
  """Outside the dataset readers, every file is reached through epath: no builtin open, os.path, os file
  calls, pathlib/shutil, or savefig/np.save on a path (smtjax.plotting renders figures to memory)."""
  files = sorted(p for d in ('smtjax', 'experiments', 'configs') for p in (ROOT / d).rglob('*.py'))
  assert len(files) > 20
  bad = [v for p in files if str(p.relative_to(ROOT)) not in ALLOWED for v in _violations(p)]
  allowed_figure_saver = 'smtjax/plotting.py'  # savefig into an in-memory buffer, written through epath
  bad = [v for v in bad if not (v.startswith(allowed_figure_saver) and 'savefig' in v)]
  assert not bad, '\n'.join(bad)


def test_the_static_rule_catches_violations(tmp_path):
  p = ROOT / 'tests' / '_violation_probe.py'  # under ROOT so relative_to works
  try:
    p.write_text('import os\nimport pathlib\nopen(os.path.join(w, "m"), "a")\nos.makedirs(w)\nfig.savefig(w)\n'
                 'np.save(w, x)\nmanager.save(1, x)\n')
    kinds = _violations(p)
    assert len(kinds) == 6, kinds  # manager.save (Orbax, epath inside) is not one
    for k in ('open()', 'os.path', 'os.makedirs', 'savefig', 'imports pathlib', 'np.save'):
      assert k in ' '.join(kinds), kinds
  finally:
    p.unlink()
