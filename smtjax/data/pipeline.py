"""Per-process batch iteration over a Source on grain, with read-ahead and checkpointable state."""

from __future__ import annotations

import os

import grain
import numpy as np

from smtjax.data.base import Source

_NUM_BATCHES = 1 << 62  # "forever": batches are indexed, not drawn from a finite epoch


class BatchIterator:
  """Yields this process's rows of global batches start_index, start_index+1, ... of `split`.

  Process p of P reads rows [p*B/P, (p+1)*B/P) of every global batch of size B, so the hosts of a
  multi-host run read disjoint shares that together form the same global batch as one host would.
  The pipeline is `grain.MapDataset.range(index, ...).map(get_batch).to_iter_dataset(read-ahead)`:
  grain threads build the next `prefetch` batches while the caller trains on this one.
  State is the index of the next batch, a small JSON dict: `set_state(get_state())` replays exactly.
  """

  def __init__(self, source: Source, split: str, batch_size: int, process_index: int = 0,
               process_count: int = 1, start_index: int = 0, prefetch: int = 2):
    if batch_size % process_count:
      raise ValueError(f'batch_size {batch_size} is not divisible by the process count {process_count}')
    if not 0 <= process_index < process_count:
      raise ValueError(f'process_index {process_index} is not in [0, process_count={process_count})')
    self.source, self.split = source, split
    per = batch_size // process_count
    self.rows = (process_index * per, (process_index + 1) * per)
    self.prefetch = max(0, int(prefetch))
    self.set_state({'index': start_index})

  def _load(self, index: int) -> dict[str, np.ndarray]:
    return self.source.get_batch(self.split, int(index), *self.rows)

  def _build(self, start: int):
    ds = grain.MapDataset.range(start, start + _NUM_BATCHES).map(self._load)
    if self.prefetch:
      threads = min(self.prefetch, os.cpu_count() or 1)
      opts = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=self.prefetch)
    else:
      opts = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)
    return iter(ds.to_iter_dataset(opts))

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    batch = next(self._it)
    self._next += 1
    return batch

  def get_state(self) -> dict:
    return {'index': int(self._next)}

  def set_state(self, state: dict):
    """Continues from batch `state['index']` (rebuilding the grain pipeline there)."""
    self._next = int(state['index'])
    if self._next < 0:
      raise ValueError(f'batch index {self._next} in the iterator state is negative')
    self._it = self._build(self._next)

  def close(self):
    self._it = None
