"""Metric writing: `workdir/metrics.jsonl` (one JSON object per logged step) and TensorBoard event
files under `workdir/tensorboard/`. Only process 0 writes.

Object stores (gs://) have no append, so nothing is appended: the writer keeps the run's records in
memory and rewrites metrics.jsonl whole at every `flush` (the train loop flushes at evaluation and
checkpoint steps, and at most every `flush_every_s` seconds otherwise); each flush of TensorBoard events
is a new event file, written once (TensorBoard reads every `*tfevents*` file of the directory in name
order). A resumed run starts from the records up to its checkpoint, so its file equals an
uninterrupted run's.
"""

from __future__ import annotations

import io
import json
import math
import os
import socket
import statistics
import time

from etils import epath
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

from smtjax import workdir as workdir_lib
from smtjax.errors import WorkdirError


def read_metrics(workdir) -> list[dict]:
  """All records of workdir/metrics.jsonl, in order. A last line cut short (a run killed while writing it)
  is skipped; any other unreadable line raises WorkdirError naming the file and line."""
  path = epath.Path(workdir) / 'metrics.jsonl'
  if not path.exists():
    return []
  try:
    lines = path.read_text().splitlines(keepends=True)
  except (OSError, UnicodeDecodeError) as e:
    raise WorkdirError(f'cannot read {path}: {e}') from e
  records = []
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
      if not isinstance(record, dict) or not isinstance(record.get('step'), int):
        raise ValueError('not a metrics record with an integer "step"')
    except ValueError as e:
      if i == len(lines) - 1 and not line.endswith('\n'):
        break  # the write of this last record was cut short; its step is past the last checkpoint
      raise WorkdirError(f'{path}: line {i + 1} is not a metrics record ({e}); fix or delete that line') from e
    records.append(record)
  return records


# Logged values that measure speed, not the run: they differ between a resumed and an uninterrupted run.
TIMING_KEYS = ('steps_per_s', 'tflops_per_s', 'mfu')


def without_timings(records: list[dict]) -> list[dict]:
  """Metrics records less their TIMING_KEYS, for comparing two runs."""
  return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def _json_line(record: dict) -> str:
  return json.dumps({k: (v if not isinstance(v, float) or math.isfinite(v) else str(v)) for k, v in record.items()})


class MetricWriter:
  def __init__(self, workdir, enabled: bool = True, resume_step: int = 0, flush_every_s: float = 30.0):
    """Keeps the records up to `resume_step` (drops those logged after the last checkpoint of an
    interrupted run) and rewrites the file with them."""
    self.enabled = enabled
    if not enabled:
      return
    self.workdir = epath.Path(workdir)
    self.path = self.workdir / 'metrics.jsonl'
    self.flush_every_s = flush_every_s
    self._lines = [_json_line(r) for r in read_metrics(self.workdir) if r['step'] <= resume_step]
    self._events: list[event_pb2.Event] = []
    self._tb_dir = self.workdir / 'tensorboard'
    # Event files of one writer: <start time>.<host>.<pid>.<sequence>, so name order is write order.
    self._tb_prefix = f'events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}'
    self._tb_count = 0
    self._dirty = True
    self._last_flush = time.monotonic()
    self.flush()

  def write(self, step: int, metrics: dict):
    if not self.enabled:
      return
    record = {'step': int(step)}
    record.update({k: float(v) for k, v in metrics.items()})
    self._lines.append(_json_line(record))
    values = [summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in record.items() if k != 'step']
    self._events.append(event_pb2.Event(step=int(step), wall_time=time.time(),
                                        summary=summary_pb2.Summary(value=values)))
    self._dirty = True
    if time.monotonic() - self._last_flush >= self.flush_every_s:
      self.flush()

  def flush(self):
    """Rewrites metrics.jsonl and writes the pending TensorBoard events as one new event file."""
    if not self.enabled or not self._dirty:
      return
    workdir_lib.write_text(self.path, ''.join(line + '\n' for line in self._lines))
    if self._events:
      buf = io.BytesIO()
      records = RecordWriter(buf)
      records.write(event_pb2.Event(wall_time=time.time(), file_version='brain.Event:2').SerializeToString())
      for e in self._events:
        records.write(e.SerializeToString())
      self._tb_dir.mkdir(parents=True, exist_ok=True)
      (self._tb_dir / f'{self._tb_prefix}.{self._tb_count:06d}').write_bytes(buf.getvalue())
      self._tb_count += 1
      self._events = []
    self._dirty = False
    self._last_flush = time.monotonic()

  def close(self):
    self.flush()


def trained_seconds(workdir) -> float:
  """Seconds a run spent training, from its log: each logged interval's steps over its steps per second, the
  first interval (which compiles) at the median rate of the others."""
  logged = [r for r in read_metrics(workdir) if 'steps_per_s' in r]
  if not logged:
    return float('nan')
  rates = [r['steps_per_s'] for r in logged[1:]] or [logged[0]['steps_per_s']]
  seconds, last = logged[0]['step'] / statistics.median(rates), logged[0]['step']
  for r in logged[1:]:
    seconds, last = seconds + (r['step'] - last) / r['steps_per_s'], r['step']
  return seconds
