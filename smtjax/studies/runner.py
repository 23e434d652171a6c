"""The studies' runner: every study states its runs as `Job`s (a config, a workdir, the workdirs it starts from)
and `run_jobs` trains them.

- Lanes: `lanes` runs at a time, each in a process of its own (`experiments.run` on the saved config) pinned to
  its own core with single-threaded XLA, so that step times are one core's and runs do not slow each other;
  `lanes=0` trains one run after another in this process (notebooks, debuggers, tests).
- Order and resumption: a job starts once the workdirs in its `after` are finished; a finished workdir is not
  trained again, and an interrupted one resumes from its checkpoint. A workdir that holds another run's config
  is refused before anything trains.
- Results ledger (smtjax/studies/ledger.py): a job the ledger holds is not trained (unless a job that trains
  starts from its checkpoint), and every finished job is recorded there, with a study's scores.
- Naming and scoring: `RunKey` names a run (method, stage, candidate) and its workdir; `with_steps` sets a
  run's steps and evaluations; `score` evaluates a finished run on held-out sequences.

What a study does with the runs (equal wall clock: smtjax/studies/wallclock.py; equal steps: claims, recipe,
compare, compression, ceiling) lives in the study's module.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import subprocess
import sys
import time

import jax
from absl import logging
from etils import epath

from smtjax import config as config_lib
from smtjax import runs, train
from smtjax import workdir as workdir_lib
from smtjax.data import make_source
from smtjax.errors import ConfigError
from smtjax.evaluation import EvalSpec, Evaluator
from smtjax.metrics import read_metrics
from smtjax.studies import ledger as ledger_lib

ONE_CORE = '--xla_cpu_multi_thread_eigen=false'
LN2 = math.log(2)


@dataclasses.dataclass(frozen=True)
class RunKey:
  """Names one run of a study or its calibration entry: a method (or a swept knob), the stage of a two-stage
  method (START: an 'smt_dmt' method's SMT stage) and the candidate setting being tuned. `str(key)`, e.g.
  'smt_dmt:start|lr0.001', names it in calibration.json and under out/calibration/."""
  method: str
  stage: str = ''
  candidate: str = ''

  def __post_init__(self):
    if any(sep in self.method for sep in ':|') or '|' in self.stage:
      raise ValueError(f'a run key\'s method may hold neither ":" nor "|", its stage no "|": {self!r}')

  def __str__(self) -> str:
    return self.method + (f':{self.stage}' if self.stage else '') + (f'|{self.candidate}' if self.candidate else '')

  @classmethod
  def parse(cls, text: str) -> RunKey:
    """The key whose `str` is `text`."""
    rest, _, candidate = text.partition('|')
    method, _, stage = rest.partition(':')
    return cls(method, stage, candidate)

  @property
  def dirname(self) -> str:
    """The run's workdir name in a folder of runs: its parts joined by '_' ('smt_dmt_start', 'smt_gru_lr0.001')."""
    return '_'.join(part for part in (self.method, self.stage, self.candidate) if part)

  def tuned(self, candidate: str) -> RunKey:
    """This run with candidate setting `candidate`."""
    return dataclasses.replace(self, candidate=candidate)


def with_steps(config, steps: int, evals: int):
  """`config` trained for `steps` steps, evaluated `evals` times (learning curves) and checkpointed at the end."""
  c = config.copy_and_resolve_references()
  c.num_steps = max(1, int(steps))
  c.eval_every = max(1, c.num_steps // max(1, evals))
  c.checkpoint_every = c.num_steps
  c.log_every = max(1, min(c.log_every, c.eval_every))
  return c


@dataclasses.dataclass(frozen=True)
class Job:
  """Train `config` in `workdir` once the workdirs in `after` are done; `copy_from`: start from a copy of that
  (finished) workdir, so the run continues its checkpoint."""
  workdir: epath.Path
  config: object
  after: tuple = ()
  copy_from: epath.Path | None = None
  name: str = ''  # the run's name in a results ledger (smtjax/studies/ledger.py); '': its workdir


def _launch(workdir: epath.Path, core: int | None) -> subprocess.Popen:
  """`python -m experiments.run --workdir=W` on the saved config.json, pinned to `core` (one XLA thread)."""
  env = dict(os.environ)
  cmd = [sys.executable, '-m', 'experiments.run', f'--workdir={workdir}']
  if core is not None:
    env['XLA_FLAGS'] = f"{env.get('XLA_FLAGS', '')} {ONE_CORE}".strip()
    cmd = ['taskset', '-c', str(core)] + cmd
  log = (workdir / 'run.log').open('ab')  # noqa: SIM115  (inherited by the process; closed with it)
  return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def _check_workdir(job: Job) -> None:
  """Refuses a job whose workdir already holds another run's config (e.g. two studies given one output
  directory): its finished metrics would be read, and recorded, as this job's."""
  if job.copy_from is not None:
    return  # a continuation's workdir holds the run it continues until it starts
  if any((wd / 'config.json').exists() and ledger_lib.digest(config_lib.load_saved(wd)) != ledger_lib.digest(c)
         for c, wd in config_lib.stages(job.config, job.workdir)):  # what train_and_evaluate writes, stage by stage
    raise ConfigError(f'{job.workdir} holds another run (its config.json differs from this job\'s): give the study '
                      'another output directory, or remove that one')


def _done(job: Job) -> bool:
  if not (job.workdir / 'metrics.jsonl').exists():
    return False
  return any(r['step'] == job.config.num_steps and 'loss_test' in r for r in read_metrics(job.workdir))


def copy_tree(src: epath.Path, dst: epath.Path) -> None:
  """Copies a workdir's files (local or on an object store) under `dst`."""
  dst.mkdir(parents=True, exist_ok=True)
  for p in src.iterdir():
    if p.is_dir():
      copy_tree(p, dst / p.name)
    else:
      p.copy(dst / p.name, overwrite=True)


def _prepare(job: Job) -> None:
  """The job's workdir with its config.json (and, for a continuation, the run it continues)."""
  if job.copy_from is not None and not (job.workdir / 'checkpoints').exists():
    copy_tree(epath.Path(job.copy_from), job.workdir)
  job.workdir.mkdir(parents=True, exist_ok=True)
  workdir_lib.save_config(job.config, job.workdir)


def lane_cores(lanes: int) -> list[int]:
  """The core each lane is pinned to: the first `lanes` of the cores this process may use (so an outer
  `taskset -c 1` keeps a one-lane study on core 1)."""
  allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else list(range(os.cpu_count() or 1))
  return [allowed[i % len(allowed)] for i in range(lanes)]


def _held(pending: list[Job], ledger) -> set[str]:
  """Workdirs of the pending jobs the ledger holds that need not train: none that a job which trains starts
  from (its checkpoint is needed here)."""
  held = {str(j.workdir) for j in pending if ledger.get(_name(j), j.config) is not None}
  while True:
    needed = {str(d) for j in pending if str(j.workdir) not in held
              for d in (*j.after, *([j.copy_from] if j.copy_from is not None else []))}
    if not held & needed:
      return held
    held -= needed


def _name(job: Job) -> str:
  return job.name or str(job.workdir)


def _record(job: Job, ledger, scorer) -> None:
  """Adds a finished job's record to the ledger (with `scorer(job)`'s scores) unless it holds one."""
  if ledger is not None and ledger.get(_name(job), job.config) is None:
    ledger.append(ledger_lib.make_record(_name(job), job.workdir, job.config, scorer(job) if scorer else None))


def run_jobs(jobs: list[Job], lanes: int, ledger=None, scorer=None, train_missing: bool = True) -> dict:
  """Trains every job whose workdir is not finished, `lanes` at a time, each in a process of its own pinned to
  its own core (`lane_cores`); a job starts once the workdirs it depends on are done. A failed job raises,
  naming its log. `lanes=0`: one job after another in this process, unpinned (notebooks, debuggers, tests;
  a timing made this way is this process's, not one core's).

  With a `ledger` (smtjax/studies/ledger.py): a job it already holds is not trained (unless a job that trains
  starts from its checkpoint), every finished job is recorded in it (with `scorer(job)`'s scores), and the
  return value is {workdir: record} of every job (None for a job with no record). `train_missing=False`: trains
  nothing (a report from the ledger and finished workdirs alone). A workdir that holds another run's config is
  refused before anything trains."""
  for job in jobs:
    _check_workdir(job)
  pending = [j for j in jobs if not _done(j)]
  held = _held(pending, ledger) if ledger is not None else set()
  finished = {str(j.workdir) for j in jobs if j not in pending} | held
  pending = [j for j in pending if str(j.workdir) not in held] if train_missing else []
  record = functools.partial(_record, ledger=ledger, scorer=scorer)
  for job in jobs:
    if str(job.workdir) not in held and str(job.workdir) in finished:
      record(job)
  running: dict[int, tuple[Job, subprocess.Popen]] = {}
  cores = lane_cores(lanes)

  def start_next(lane: int) -> Job | None:
    ready = next((j for j in pending if all(str(d) in finished for d in j.after)), None)
    if ready is not None:
      pending.remove(ready)
      _prepare(ready)
      logging.info('training %s (%d steps) %s', ready.workdir, ready.config.num_steps,
                   f'on core {cores[lane]}' if lanes else 'in this process')
    return ready

  while pending or running:
    if not lanes:
      if (job := start_next(0)) is not None:
        train.train_and_evaluate(config_lib.load_saved(job.workdir), job.workdir)
        finished.add(str(job.workdir))
        record(job)
        continue
    for lane in [i for i in range(lanes) if i not in running]:
      if (job := start_next(lane)) is None:
        break
      running[lane] = (job, _launch(job.workdir, cores[lane]))
    if not running:
      raise RuntimeError(f'jobs wait for workdirs that no job trains: {[str(j.workdir) for j in pending]}')
    time.sleep(0.25)  # runs last seconds (tests) to hours; a poll costs nothing
    for lane, (job, proc) in list(running.items()):
      if proc.poll() is not None:
        del running[lane]
        if proc.returncode != 0:
          raise RuntimeError(f'training {job.workdir} failed (exit {proc.returncode}); see {job.workdir / "run.log"}')
        finished.add(str(job.workdir))
        record(job)
  if ledger is None:
    return {}
  return {str(j.workdir): ledger.get(_name(j), j.config) for j in jobs}



def score(workdir, multiples: tuple[int, ...], num_batches: int, split: str = 'test') -> dict:
  """A trained run on held-out sequences of its training length T and of each multiple * T: the RNN from its
  initial memory (and, for an SMT run, the teacher): bits per token and accuracy, overall and per position.
  Keys: '<rnn_only|teacher>_<bits|accuracy|bits_per_t>' with suffix '' (T) or '_x<k>' (k * T)."""
  config, params, nets, _ = runs.load_run(str(workdir))
  T, out = config.data.seq_len, {}
  for k in (1, *multiples):
    c = runs.at_seq_len(config, k * T)
    spec = EvalSpec(teacher=config.method == 'smt', per_position=True)
    evaluator = Evaluator(config_lib.Run.of(c, jax.device_count()), nets, spec)
    m = evaluator(params, make_source(c.data, c.seed), num_batches, split)
    suffix = '' if k == 1 else f'_x{k}'
    for name in ('rnn_only', 'teacher'):
      if f'{name}_loss' in m:
        out[f'{name}_bits{suffix}'] = m[f'{name}_loss'] / LN2
        out[f'{name}_accuracy{suffix}'] = m[f'{name}_accuracy']
        out[f'{name}_bits_per_t{suffix}'] = [v / LN2 for v in m[f'{name}_loss_per_t']]  # NaN: no target there
  return out
