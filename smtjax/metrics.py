"""Metric writing: `workdir/metrics.jsonl` (one JSON object per logged step) and TensorBoard event
files under `workdir/tensorboard/`. Only process 0 writes."""

from __future__ import annotations

import json
import math
import os
import time

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from smtjax.checkpoint import write_file
from smtjax.errors import WorkdirError


def read_metrics(workdir: str) -> list[dict]:
  """All records of workdir/metrics.jsonl, in order. A last line cut short (a run killed while writing it)
  is skipped; any other unreadable line raises WorkdirError naming the file and line."""
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  try:
    with open(path, encoding='utf-8') as f:
      lines = f.readlines()
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


class MetricWriter:
  def __init__(self, workdir: str, enabled: bool = True, resume_step: int = 0):
    """Opens the writers; drops JSON records past `resume_step` (logged after the last checkpoint of an
    interrupted run), so a resumed run's file equals an uninterrupted run's."""
    self.enabled = enabled
    if not enabled:
      return
    self.path = os.path.join(workdir, 'metrics.jsonl')
    kept = [r for r in read_metrics(workdir) if r['step'] <= resume_step]
    write_file(self.path, ''.join(json.dumps(r) + '\n' for r in kept))
    self._tb = EventFileWriter(os.path.join(workdir, 'tensorboard'))

  def write(self, step: int, metrics: dict):
    if not self.enabled:
      return
    record = {'step': int(step)}
    record.update({k: float(v) for k, v in metrics.items()})
    line = json.dumps({k: (v if not isinstance(v, float) or math.isfinite(v) else str(v)) for k, v in record.items()})
    try:
      with open(self.path, 'a') as f:
        f.write(line + '\n')
    except OSError as e:  # a full disk: the records already written stay
      raise WorkdirError(f'cannot write {self.path} (step {step}): {e}') from e
    values = [summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in record.items() if k != 'step']
    self._tb.add_event(event_pb2.Event(step=int(step), wall_time=time.time(),
                                       summary=summary_pb2.Summary(value=values)))

  def flush(self):
    if self.enabled:
      self._tb.flush()

  def close(self):
    if self.enabled:
      self._tb.close()
