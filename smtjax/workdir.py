"""Workdir paths on any filesystem, and the lock that keeps two live runs out of one workdir.

Every workdir and output path is an `etils.epath.Path`, so `--workdir=gs://bucket/run` (or s3://, az://)
reaches the object store from every host instead of becoming a local folder named `gs:`. Files are
written whole (`write_text`); nothing is opened in append mode, which object stores do not have.

    workdir = as_path(flag)          # epath.Path; local paths made absolute
    with WorkdirLock(workdir):       # process 0 only: refuses a workdir another live run holds
      ...
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time

from absl import logging
from etils import epath

from smtjax.errors import WorkdirError, WorkdirLockedError  # noqa: F401  (re-exported)

_REMOTE_PREFIXES = ('gs://', 's3://', 'az://', 'hf://')
LOCK_NAME = 'lock.json'


def is_remote(path) -> bool:
  """True for object-store paths (gs://, s3://, ...): no rename atomicity, no append, no pids."""
  return str(path).startswith(_REMOTE_PREFIXES)


def as_path(path) -> epath.Path:
  """`path` as an epath.Path; local paths are expanded and made absolute (Orbax needs absolute ones)."""
  p = epath.Path(path)
  return p if is_remote(p) else p.expanduser().resolve()


def write_text(path, text: str) -> None:
  """Writes a whole file. Local: through a temporary file and a rename, so readers never see half of
  it (a kill leaves the old file or the new one); object stores: one upload, which is atomic there (an
  object appears only when complete). An OSError (read-only or full file system) becomes a WorkdirError
  naming the file; the old file is kept."""
  path = epath.Path(path)
  try:
    if is_remote(path):
      path.write_text(text)
      return
    tmp = path.parent / f'.{path.name}.tmp-{os.getpid()}'
    try:
      tmp.write_text(text)
      tmp.replace(path)
    finally:
      if tmp.exists():
        tmp.unlink()
  except OSError as e:
    raise WorkdirError(f'cannot write {path}: {e}') from e


def save_config(config, workdir, process_index: int = 0) -> None:
  """workdir/config.json: the run's whole config (written by process 0 only)."""
  if process_index == 0:
    write_text(epath.Path(workdir) / 'config.json', config.to_json_best_effort(indent=2, sort_keys=True))


def json_safe(v):
  """`v` with NaN and infinities as None (JSON has neither), numpy scalars as Python numbers, tuples as
  lists: the one sanitizer of every JSON file smtjax writes."""
  if isinstance(v, dict):
    return {k: json_safe(x) for k, x in v.items()}
  if isinstance(v, (list, tuple)):
    return [json_safe(x) for x in v]
  if hasattr(v, 'item') and getattr(v, 'ndim', None) == 0:  # a numpy or jax scalar
    v = v.item()
  return None if isinstance(v, float) and not math.isfinite(v) else v


def write_json(path, obj, **dumps_kwargs) -> None:
  """`obj` (json_safe) as JSON at `path`, written whole (`write_text`)."""
  write_text(path, json.dumps(json_safe(obj), indent=2, **dumps_kwargs))


# Environment variables that change the compiled program or its numerics without appearing in the config.
PROGRAM_ENV = ('SMTJAX_ATTENTION', 'XLA_FLAGS', 'JAX_PLATFORMS', 'JAX_DEFAULT_MATMUL_PRECISION', 'JAX_ENABLE_X64')


def record_environment(workdir, entry: dict, process_index: int = 0) -> None:
  """Appends `entry` (the start step, software, devices) with the PROGRAM_ENV variables that are set to
  workdir/environment.json, one entry per start of the run, so a resumed run that compiled a different
  program says so. Written by process 0 only; an unreadable file is started afresh (it is a record, not
  state)."""
  if process_index != 0:
    return
  path = epath.Path(workdir) / 'environment.json'
  try:
    history = json.loads(path.read_text()) if path.exists() else []
  except (OSError, ValueError):
    history = []
  if not isinstance(history, list):
    history = []
  env = {k: os.environ[k] for k in PROGRAM_ENV if k in os.environ}
  write_text(path, json.dumps(history + [dict(entry, env=env)], indent=2, sort_keys=True))


# -------------------------------------------------------------------------------------------- lock

def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)  # signal 0: existence check only
  except ProcessLookupError:
    return False
  except PermissionError:  # exists, owned by another user
    return True
  return True


class WorkdirLock:
  """`workdir/lock.json` = {host, pid, time}: held while a run trains in the workdir.

  A lock is stale, and taken over, when its pid is dead on this host, or when its `time` (refreshed
  every `heartbeat_s` by a daemon thread) is older than `stale_after_s` (a holder on another host that
  died without releasing it). A live holder makes `acquire` raise WorkdirLockedError naming it.
  Object stores have no exclusive create, so two runs starting within the same second could both pass
  the check; after writing, the lock is read back and a run that finds another holder's record fails.
  """

  def __init__(self, workdir, heartbeat_s: float = 60.0, stale_after_s: float = 600.0):
    self.path = epath.Path(workdir) / LOCK_NAME
    self.heartbeat_s, self.stale_after_s = heartbeat_s, stale_after_s
    self.me = {'host': socket.gethostname(), 'pid': os.getpid()}
    self._stop = threading.Event()
    self._thread = None

  def holder(self) -> dict | None:
    """The live holder's record, or None when the workdir is free (no lock, ours, or stale)."""
    try:
      rec = json.loads(self.path.read_text())
    except FileNotFoundError:
      return None
    except (OSError, ValueError):  # a half-written or garbled lock protects nothing
      return None
    if not isinstance(rec, dict) or (rec.get('host'), rec.get('pid')) == (self.me['host'], self.me['pid']):
      return None
    if rec.get('host') == self.me['host']:
      return rec if _pid_alive(int(rec.get('pid', -1))) else None
    return rec if time.time() - float(rec.get('time', 0)) < self.stale_after_s else None

  def _write(self):
    write_text(self.path, json.dumps({**self.me, 'time': time.time()}))

  def acquire(self) -> WorkdirLock:
    held = self.holder()
    if held is not None:
      raise WorkdirLockedError(
          f'{self.path.parent} is in use by another run (host {held.get("host")}, pid {held.get("pid")}, '
          f'lock refreshed {time.time() - float(held.get("time", 0)):.0f} s ago); stop it or use another '
          f'--workdir (a lock is taken over when its process is dead or it is {self.stale_after_s:.0f} s old)')
    self._write()
    held = self.holder()
    if held is not None:
      raise WorkdirLockedError(f'{self.path.parent}: another run (host {held.get("host")}, pid {held.get("pid")}) '
                               'took the lock at the same time')
    self._stop.clear()
    self._thread = threading.Thread(target=self._beat, name='workdir-lock', daemon=True)
    self._thread.start()
    return self

  def _beat(self):
    while not self._stop.wait(self.heartbeat_s):
      try:
        self._write()
      except OSError as e:  # a transient store error must not kill training
        logging.warning('could not refresh %s: %s', self.path, e)

  def release(self):
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
      self._thread = None
    try:
      rec = json.loads(self.path.read_text())
      if (rec.get('host'), rec.get('pid')) == (self.me['host'], self.me['pid']):
        self.path.unlink()
    except (OSError, ValueError):
      pass

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()


class _NoLock:
  """What processes other than 0 hold: nothing."""

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    pass


def lock(workdir, process_index: int = 0, **kwargs):
  """The workdir lock for process 0; a no-op for the other processes of a multi-host run."""
  return WorkdirLock(workdir, **kwargs) if process_index == 0 else _NoLock()


# ------------------------------------------------------------------------------------ default workdir

def default_workdir(config_file: str, variant: str | None = None, root: str = 'workdirs') -> str:
  """`workdirs/<config file stem>[_<variant>]`: distinct per config file and variant, so `:small` and the
  default of one config, or two configs of the same dataset, never share a run directory."""
  stem = epath.Path(config_file).stem
  return f'{root}/{stem}_{variant}' if variant else f'{root}/{stem}'
