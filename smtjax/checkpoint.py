"""Orbax checkpointing of the train state and the data iterator, under `workdir/checkpoints/`.

A checkpoint is a Composite of `state` (the TrainState pytree, saved sharded by every process
collectively) and `data` (the iterator's JSON state). Saves are asynchronous and atomic (Orbax writes a
temporary directory and renames it), so a run killed mid-save leaves the previous checkpoint intact.
`restore_latest` falls back to the newest checkpoint that restores, setting damaged newer ones aside as
`checkpoints/<step>.corrupt-<time>` (never deleting them).
"""

from __future__ import annotations

import errno
import logging as std_logging
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from smtjax import workdir as workdir_lib
from smtjax.errors import CheckpointError, WorkdirError  # noqa: F401  (re-exported)


def _all_processes(ok: bool) -> bool:
  """True when `ok` holds on every process (a collective: every process must call it)."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.asarray(ok))))


def _barrier(name: str):
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def _quiet_closed_loop_noise():
  """When a restore or an asynchronous save fails (a corrupt file, a full disk), tensorstore reads and writes still
  in flight report to Orbax's closed asyncio loop, and Python prints each as an 'Event loop is closed' traceback;
  drop those (only those)."""
  previous = sys.unraisablehook
  if getattr(previous, '_smtjax_quiet', False):
    return

  def hook(u):
    if isinstance(u.exc_value, RuntimeError) and str(u.exc_value) == 'Event loop is closed':
      return
    previous(u)
  hook._smtjax_quiet = True
  sys.unraisablehook = hook


def _reason(e: BaseException, limit: int = 400) -> str:
  """The first line of an exception's message (Orbax and tensorstore messages run long)."""
  text = f'{type(e).__name__}: {e}'.strip().splitlines()[0]
  return text if len(text) <= limit else text[:limit] + '...'


def _no_space(e: BaseException | None) -> bool:
  """Whether `e`, or an exception it comes from, reports a full disk: an OSError with ENOSPC, or tensorstore's
  error text (a ValueError naming the OS error code)."""
  seen = set()
  while e is not None and id(e) not in seen:
    if ((isinstance(e, OSError) and e.errno == errno.ENOSPC) or 'No space left on device' in str(e)
        or f"os_error_code='{errno.ENOSPC}'" in str(e)):
      return True
    seen.add(id(e))
    e = e.__cause__ or e.__context__
  return False


def _write_reason(e: BaseException) -> str:
  """Why a checkpoint write failed: a full disk in one phrase (tensorstore's message runs to kilobytes and names
  the file in a temporary directory), otherwise the exception's first line."""
  return 'No space left on device (the disk is full)' if _no_space(e) else _reason(e)


class _NotFullDisk(std_logging.Filter):
  """Drops log records that carry a full disk's exception with its traceback: Orbax's background save threads
  log each failed write, and asyncio each future of Orbax's closed loop that held one. The CheckpointError
  that ends the run names the full disk in one line."""

  def filter(self, record):
    return not (record.exc_info and _no_space(record.exc_info[1]))


def _quiet_full_disk_logs():
  for name in ('absl', 'asyncio'):
    logger = std_logging.getLogger(name)
    if not any(isinstance(f, _NotFullDisk) for f in logger.filters):
      logger.addFilter(_NotFullDisk())


class Checkpointer:
  def __init__(self, workdir, max_to_keep: int = 2):
    self.directory = workdir_lib.as_path(workdir) / 'checkpoints'
    try:
      # cleanup_tmp_directories: unfinished saves of a killed run (`<step>.orbax-checkpoint-tmp*`) go.
      self.manager = ocp.CheckpointManager(
          self.directory,
          options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True),
          item_names=('state', 'data'))
    except OSError as e:
      raise WorkdirError(f'cannot open the checkpoint directory {self.directory}: {e}') from e

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, data_state: dict):
    """Starts an asynchronous save; an error of the previous save (e.g. a full disk) surfaces here."""
    _quiet_closed_loop_noise()  # before the save: a failing one reports in background threads, after the loop closed
    _quiet_full_disk_logs()
    try:
      self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                      data=ocp.args.JsonSave(data_state)))
    except Exception as e:  # noqa: BLE001  (Orbax and the file system raise many types)
      raise CheckpointError(f'cannot write checkpoint step {step} in {self.directory}: {_write_reason(e)} '
                            f'(earlier checkpoints are kept: {self.all_steps()})') from e

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def restore(self, abstract_state, step: int | None = None):
    """(state, data_state) of `step` (default latest), placed with the shardings in `abstract_state`
    (a pytree of jax.ShapeDtypeStruct with .sharding): the whole TrainState, or a dict of some of its fields
    ({'params': ...}), which reads those alone."""
    step = self.latest_step() if step is None else step
    try:
      out = self.manager.restore(step, args=ocp.args.Composite(state=_state_restore(abstract_state),
                                                               data=ocp.args.JsonRestore()))
    except Exception as e:  # noqa: BLE001  (corrupt files raise ValueError, KeyError, UnicodeError, OSError...)
      _quiet_closed_loop_noise()
      raise CheckpointError(f'cannot restore checkpoint step {step} from {self.directory}: {_reason(e)}') from e
    return out['state'], out['data']

  def restore_latest(self, abstract_state, set_aside: bool = True):
    """(step, state, data_state) of the newest checkpoint that restores, or None when there is none.

    A checkpoint that fails (corrupt, truncated, missing items) is logged with its step and reason; once
    an older one restores, the failed newer ones are renamed `<step>.corrupt-<time>` (`set_aside`), so
    the run continues from the good one and never deletes anything. When none restores, all are left in
    place and CheckpointError lists each step's reason. Every process takes the same decision.
    """
    failed: list[tuple[int, str]] = []
    for step in sorted(self.manager.all_steps(), reverse=True):
      reason = 'it failed to restore on another process'
      try:
        state, data_state = self.restore(abstract_state, step)
        ok = True
      except CheckpointError as e:
        ok, reason = False, _reason(e.__cause__ or e)
      if _all_processes(ok):
        if failed and set_aside:
          self._set_aside([s for s, _ in failed])
        if failed:
          logging.warning('resuming from checkpoint step %d, the newest that restores', step)
        return step, state, data_state
      logging.warning('checkpoint step %d in %s cannot be restored: %s', step, self.directory, reason)
      failed.append((step, reason))
    if failed:
      raise CheckpointError(f'no checkpoint in {self.directory} can be restored (all are left in place):\n  '
                            + '\n  '.join(f'step {s}: {r}' for s, r in failed))
    return None

  def _set_aside(self, steps: list[int]):
    """Renames step directories to `<step>.corrupt-<time>` (process 0), which Orbax no longer lists."""
    stamp = time.strftime('%Y%m%dT%H%M%S')
    if jax.process_index() == 0:
      for step in steps:
        src = self.directory / str(step)
        dst = self.directory / f'{step}.corrupt-{stamp}'
        while dst.exists():  # set aside twice within a second
          dst = dst.parent / (dst.name + '-1')
        src.rename(dst)
        logging.warning('set aside the damaged checkpoint step %d as %s', step, dst)
    _barrier('smtjax-checkpoint-set-aside')
    self.manager.reload()

  def wait(self):
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # noqa: BLE001  an asynchronous save failed
      raise CheckpointError(f'cannot write a checkpoint in {self.directory}: {_write_reason(e)} '
                            f'(earlier checkpoints are kept: {self.all_steps()})') from e

  def close(self):
    try:
      self.wait()
    finally:
      self.manager.close()


def _state_restore(abstract_state):
  if isinstance(abstract_state, dict):  # a part of the saved state: the rest is not read
    return ocp.args.PyTreeRestore(abstract_state, partial_restore=True,
                                  restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_state))
  return ocp.args.StandardRestore(abstract_state)


def abstract_with_shardings(abstract_tree, shardings):
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_tree, shardings)
