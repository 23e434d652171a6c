"""The results ledger: one JSON line per finished run of a study, in a file committed under docs/results/runs/,
so that a study accumulates finished runs across machines and sessions.

A record holds what a study's tables, verdicts and figures need, and nothing large: the run's `name` in its
study (e.g. 'retrieval/T64/seed1/smt_transformer_lr0.001'), the `digest` of its config (without the fields that
do not change what is trained: paths, logging, checkpoint cadence), the task, T, method, cell, learning rate,
seed, steps and batch, every scalar metric of each periodic evaluation (`curves`), the last evaluation
(`final`), seconds per update and seconds trained, the study's own scores (`scores`, e.g. on the test split),
and the commit, device and date. No checkpoints, no data.

`runner.run_jobs(jobs, lanes, ledger=...)` trains only the jobs the ledger does not hold (same name and
digest; a held job is trained again only when a job still to train starts from its checkpoint and that
checkpoint is not on this machine), appends a record for every job that finishes (or that it finds finished
in its workdir), and returns every job's record: the studies build their summaries from records, so a report
needs the ledger alone. A run that did not finish leaves no record.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import statistics
import subprocess

import jax
from etils import epath

from smtjax import workdir as workdir_lib
from smtjax.errors import WorkdirError
from smtjax.metrics import read_metrics, trained_seconds

# Fields that do not change what a run trains or how it is scored: left out of the digest.
VOLATILE = ('init_from', 'progress_bar', 'metrics_flush_secs', 'checkpoint_every', 'max_checkpoints_to_keep',
            'log_every', 'data.path', 'profile_steps', 'profile_dir')


# Sections that change nothing at these values, left out of the digest when they hold them, so the records made
# before a section existed still match the configs that leave it off.
OFF = {'curriculum': {'length': 0, 'steps': 0}}


def digest(config) -> str:
  """A short hash of `config` without its VOLATILE fields (and its OFF sections when off): two runs with equal
  digests train the same thing."""
  c = json.loads(config.to_json(sort_keys=True))
  for section, off in OFF.items():
    if c.get(section) == off:
      del c[section]
  for field in VOLATILE:
    *parents, leaf = field.split('.')
    d = c
    for p in parents:
      d = d.get(p, {})
    d.pop(leaf, None)
  return hashlib.sha256(json.dumps(c, sort_keys=True).encode()).hexdigest()[:16]


@functools.cache
def _commit() -> str:
  try:
    out = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True, timeout=10,
                         cwd=epath.Path(__file__).parent, check=False)
    return out.stdout.strip() or 'unknown'
  except OSError:
    return 'unknown'


def _restore(v):
  """A record as read back: JSON's None (written for NaN) as NaN again."""
  if isinstance(v, dict):
    return {k: _restore(x) for k, x in v.items()}
  if isinstance(v, list):
    return [_restore(x) for x in v]
  return float('nan') if v is None else v


def _scalars(record: dict) -> dict:
  return {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def make_record(name: str, workdir, config, scores: dict | None = None) -> dict:
  """The record of a finished run in `workdir` (module docstring)."""
  metrics = read_metrics(workdir)
  evals = [_scalars(r) for r in metrics if 'loss_test' in r or 'rnn_only_loss' in r]
  if not evals:
    raise WorkdirError(f'{workdir}: no evaluation in metrics.jsonl; a ledger records finished runs only')
  keys = sorted({k for r in evals for k in r} - {'step'})
  curves = {'steps': [int(r['step']) for r in evals], **{k: [r.get(k, float('nan')) for r in evals] for k in keys}}
  rates = [r['steps_per_s'] for r in metrics if 'steps_per_s' in r][1:]  # the first interval compiles
  return {
      'name': name, 'digest': digest(config), 'task': config.data.name, 'T': int(config.data.seq_len),
      'method': config.method, 'cell': config.model.cell, 'lr': float(config.optim.lr), 'seed': int(config.seed),
      'steps': int(config.num_steps), 'batch': int(config.batch_size),
      'seconds_per_update': 1.0 / statistics.median(rates) if rates else float('nan'),
      'seconds': trained_seconds(workdir), 'curves': curves, 'final': evals[-1],
      'scores': {k: v for k, v in (scores or {}).items() if isinstance(v, (int, float))},
      'commit': _commit(), 'device': jax.devices()[0].device_kind,
      'date': datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d'),
  }


def curve(record: dict, key: str, offset: int = 0) -> dict:
  """{'steps', 'values'} of `key` at each evaluation of a recorded run (steps shifted by `offset`)."""
  c = record['curves']
  if key not in c:
    return {'steps': [], 'values': []}
  return {'steps': [offset + s for s in c['steps']], 'values': list(c[key])}


class Ledger:
  """The records of one JSON-lines file, looked up by (name, digest); appended to as runs finish. `path=None`:
  records kept in memory only (a study run without a ledger file)."""

  def __init__(self, path=None):
    self.path = None if path is None else epath.Path(path)
    self._records: dict[tuple[str, str], dict] = {}
    if self.path is not None and self.path.exists():
      for i, line in enumerate(self.path.read_text().splitlines()):
        if not line.strip():
          continue
        try:
          r = _restore(json.loads(line))
          self._records[(r['name'], r['digest'])] = r
        except (ValueError, KeyError) as e:
          raise WorkdirError(f'{self.path}, line {i + 1}: not a ledger record ({e})') from e

  def __len__(self) -> int:
    return len(self._records)

  def get(self, name: str, config) -> dict | None:
    """The record of run `name` trained with this config, if the ledger holds one."""
    return self._records.get((name, digest(config)))

  def append(self, record: dict) -> None:
    """Adds `record` (a later record of the same run replaces the earlier one when the file is read)."""
    safe = workdir_lib.json_safe(record)
    self._records[(record['name'], record['digest'])] = _restore(safe)
    if self.path is None:
      return
    self.path.parent.mkdir(parents=True, exist_ok=True)
    with self.path.open('a') as f:
      f.write(json.dumps(safe, sort_keys=True) + '\n')
