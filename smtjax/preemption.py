"""Stopping a run cleanly on SIGTERM (preemption) or SIGINT (Ctrl-C).

    with StopSignals() as signals:  # or signals = StopSignals().install() ... signals.uninstall()
      for step in ...:
        ...  # one step
        if signals.should_stop(step):
          ...  # save a checkpoint and the metrics, then raise Preempted

A signal only sets a flag; the loop finishes the step it is in, saves, and stops. A second SIGINT stops
at once (KeyboardInterrupt). With several processes every one must stop at the same step: SIGTERM goes
through JAX's preemption service when `jax.distributed` started it (a notice reaching any host makes all
hosts agree on a step, `multihost_utils.reached_preemption_sync_point`), and a flag set by our own
handler is agreed on by an all-gather every `agree_every` steps.
"""

from __future__ import annotations

import signal
import sys
import threading

import jax
import numpy as np
from jax._src import distributed
from jax.experimental import multihost_utils

from smtjax.errors import Preempted  # noqa: F401  (re-exported)


def _preemption_service():
  """JAX's preemption sync manager when jax.distributed started one (it owns SIGTERM then), else None."""
  if jax.process_count() == 1:
    return None
  return distributed.global_state.preemption_sync_manager


class StopSignals:
  """Context manager: installs SIGTERM/SIGINT handlers that request a stop, restores the old ones on exit."""

  def __init__(self, agree_every: int = 1):
    self.agree_every = max(1, int(agree_every))
    self.received: str | None = None  # name of the first signal received on this process
    self._previous: dict[int, object] = {}

  def install(self) -> StopSignals:
    if threading.current_thread() is not threading.main_thread():
      return self  # signal handlers can only be set from the main thread (e.g. not in a notebook worker)
    sigs = [signal.SIGINT] + ([] if _preemption_service() is not None else [signal.SIGTERM])
    for sig in sigs:
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def uninstall(self):
    """Puts back the handlers that were there before `install`."""
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous.clear()

  def __enter__(self) -> StopSignals:
    return self.install()

  def __exit__(self, *exc):
    self.uninstall()
    return False

  def _handle(self, signum, frame):
    name = signal.Signals(signum).name
    if self.received is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt  # asked twice: stop now, without the checkpoint
    if self.received is None:
      self.received = name
      print(f'\nReceived {name}: finishing the current step, then saving a checkpoint and the metrics '
            f'(Ctrl-C again to stop at once).', file=sys.stderr, flush=True)

  def should_stop(self, step: int) -> bool:
    """Whether to stop after `step`; the same answer on every process (a collective when there are several:
    call it after every step on all of them)."""
    if jax.process_count() == 1:
      return self.received is not None
    stop = False
    service = _preemption_service()
    if service is not None and service.reached_sync_point(step):
      self.received = self.received or 'SIGTERM'
      stop = True
    if step % self.agree_every == 0:
      flags = multihost_utils.process_allgather(np.asarray(self.received is not None))
      if np.any(flags):
        self.received = self.received or 'a signal on another process'
        stop = True
    return stop
