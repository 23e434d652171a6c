"""Metric writing: `workdir/metrics.jsonl` (one JSON object per logged step) and TensorBoard event
files under `workdir/tensorboard/`. Only process 0 writes."""

from __future__ import annotations

import json
import math
import os
import time

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter


def read_metrics(workdir: str) -> list[dict]:
  """All records of workdir/metrics.jsonl, in order."""
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


class MetricWriter:
  def __init__(self, workdir: str, enabled: bool = True, resume_step: int = 0):
    """Opens the writers; drops JSON records past `resume_step` (logged after the last checkpoint of an
    interrupted run), so a resumed run's file equals an uninterrupted run's."""
    self.enabled = enabled
    if not enabled:
      return
    self.path = os.path.join(workdir, 'metrics.jsonl')
    kept = [r for r in read_metrics(workdir) if r['step'] <= resume_step]
    with open(self.path + '.tmp', 'w') as f:
      f.writelines(json.dumps(r) + '\n' for r in kept)
    os.replace(self.path + '.tmp', self.path)
    self._tb = EventFileWriter(os.path.join(workdir, 'tensorboard'))

  def write(self, step: int, metrics: dict):
    if not self.enabled:
      return
    record = {'step': int(step)}
    record.update({k: float(v) for k, v in metrics.items()})
    with open(self.path, 'a') as f:
      f.write(json.dumps({k: (v if not isinstance(v, float) or math.isfinite(v) else str(v))
                          for k, v in record.items()}) + '\n')
    values = [summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in record.items() if k != 'step']
    self._tb.add_event(event_pb2.Event(step=int(step), wall_time=time.time(),
                                       summary=summary_pb2.Summary(value=values)))

  def flush(self):
    if self.enabled:
      self._tb.flush()

  def close(self):
    if self.enabled:
      self._tb.close()
