"""Methods compared at equal wall clock: the real-data, linear-RNN and crossover studies (their runs train through
smtjax/studies/runner.py).

A study is a base config (parallel SMT) and a list of `Method`s, each a way of training an RNN within the same
budget of seconds on one core:

- kind 'smt': SMT for the whole budget;
- kind 'smt_dmt': SMT for (1 - dmt_share) of the budget, then DMT fine-tuning for the rest;
- kind 'bptt': BPTT for the whole budget;

and `overrides` (config fields, e.g. model.cell='gru', bptt.parallel_scan=True) on the base. A method with
candidate settings (`grid`, or with `drift` the plan's drift-robust grid) is tuned first: each candidate
trains for `select_share` of the budget on the first seed, and the one that scores best on the validation
split (`select_by`: lowest bits per token, or highest accuracy) is the method's setting. Equal wall clock
is enforced through step counts: every method's training step is first timed on one core (short runs of
`experiments.run`, compilation excluded, `lanes` at a time as the study's runs will train; `calibration.json`),
and each run gets budget / (seconds per step) steps. Runs then train in `lanes` parallel processes, each pinned
to its own core with single-threaded XLA, so their step times stay those measured. A kind-'smt' method without
candidates whose overrides match an untuned 'smt_dmt' method's continues that method's SMT stage (one run
serves both). Every run is scored on the held-out test
split by the RNN reading whole sequences from its initial memory (and an SMT run's teacher from its prefix
memories), at the training length and at each `test_multiples` times it, overall and per position. Runs and
calibration entries are named by `RunKey` (method, stage, candidate).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import time

import jax
import numpy as np
from etils import epath

from smtjax import config as config_lib
from smtjax import variants
from smtjax import workdir as workdir_lib
from smtjax.data import synthetic as synthetic_tasks
from smtjax.errors import ConfigError
from smtjax.metrics import read_metrics, trained_seconds
from smtjax.models import Networks
from smtjax.studies import runner, stats
from smtjax.studies.runner import LN2, Job, RunKey, score, with_steps

DEFAULT_DRIFT_GRID = {'roll4': {'rollout_steps': 4}, 'roll4_dec': {'rollout_steps': 4, 'rollout_decode': 1.0},
                      'noise1': {'memory_noise': 1.0, 'memory_noise_mode': 'matched'}}
KINDS = ('smt', 'smt_dmt', 'bptt')
START = 'start'  # the stage name of an 'smt_dmt' method's SMT stage


@dataclasses.dataclass(frozen=True)
class Method:
  """One column of a study (see the module docstring)."""
  name: str
  label: str
  kind: str
  overrides: tuple[tuple[str, object], ...] = ()
  drift: bool = False  # candidates: the plan's drift-robust settings (smt.* fields)
  grid: tuple[tuple[str, tuple[tuple[str, object], ...]], ...] = ()  # candidates: (name, ((field, value), ...))


@dataclasses.dataclass(frozen=True)
class Plan:
  """How every method is trained and scored."""
  budget_s: float
  seeds: tuple[int, ...]
  dmt_share: float = 0.25
  select_share: float = 0.5
  drift_grid: tuple[tuple[str, tuple], ...] = tuple((k, tuple(v.items())) for k, v in DEFAULT_DRIFT_GRID.items())
  lanes: int = 2
  evals_per_run: int = 8
  num_eval_batches: int = 16
  test_multiples: tuple[int, ...] = (2,)
  select_by: str = 'bits'  # 'bits' (lowest validation loss) or 'accuracy' (highest)
  lrs: tuple[float, ...] = ()  # learning rates every method is tuned over (`candidates`); () tunes none


def candidates(method: Method, plan: Plan) -> tuple[tuple[str, tuple], ...]:
  """A method's candidate settings as (name, ((config field, value), ...)); () when it has none. Its own grid
  (or, for a drift-robust method, the plan's drift grid), each crossed with the plan's learning rates unless
  the grid already sets one."""
  if method.grid:
    own = method.grid
  elif method.drift:
    own = tuple((name, tuple((f'smt.{k}', v) for k, v in items)) for name, items in plan.drift_grid)
  else:
    own = ()
  if not plan.lrs or any(field == 'optim.lr' for _, setting in own for field, _ in setting):
    return own
  lrs = tuple((f'lr{lr:g}', (('optim.lr', float(lr)),)) for lr in plan.lrs)
  return tuple((f'{name}_{lr_name}', (*setting, *lr_setting)) for name, setting in own
               for lr_name, lr_setting in lrs) if own else lrs


# ------------------------------------------------------------------------------------------------ configs

def method_config(config, method: Method, seed: int, setting: tuple = (), stage: str = ''):
  """The config of one method's run (steps not yet set) with a candidate `setting` ((field, value), ...);
  `stage=START`: the SMT stage of an 'smt_dmt' method (whose DMT stage follows from it: lr / 3)."""
  c = config.copy_and_resolve_references()
  c.seed, c.progress_bar, c.metrics_flush_secs = int(seed), False, 0.0
  for field, value in (*method.overrides, *setting):
    variants.override(c, field, value)
  if method.kind == 'bptt':
    c.method = 'bptt'
  if method.kind == 'smt_dmt' and stage != START:
    c = variants.parallel_dmt(c)
  return c


def check(config, methods: tuple[Method, ...], plan: Plan):
  """ConfigError before anything runs: parallel SMT as the base (an RNN that starts from its initial memory),
  a validation split where a method chooses a drift setting, a sane plan, and every run's config valid."""
  if config.method != 'smt' or config.smt.mode != 'parallel':
    raise ConfigError("an equal-wall-clock study needs config.method='smt' and config.smt.mode='parallel'")
  synthetic = config.data.name in synthetic_tasks.TASKS  # these always have a validation stream
  if any(candidates(m, plan) for m in methods) and not synthetic and config.data.valid_fraction <= 0:
    raise ConfigError('config.data.valid_fraction: must be > 0 (the methods\' settings are chosen on it)')
  if plan.budget_s <= 0 or not 0 < plan.dmt_share < 1 or not 0 < plan.select_share <= 1 or not plan.seeds:
    raise ConfigError(f'bad plan: budget {plan.budget_s} s, dmt_share {plan.dmt_share}, '
                      f'select_share {plan.select_share}, seeds {plan.seeds}')
  if plan.select_by not in ('bits', 'accuracy'):
    raise ConfigError(f"plan.select_by must be 'bits' or 'accuracy', got {plan.select_by!r}")
  if plan.lanes < 0:
    raise ConfigError(f'plan.lanes must be >= 0 (0: every run in this process), got {plan.lanes}')
  for m in methods:
    if m.kind not in KINDS:
      raise ConfigError(f'method {m.name!r}: kind must be one of {KINDS}, got {m.kind!r}')
    for _, setting in candidates(m, plan) or (('', ()),):
      config_lib.validate(method_config(config, m, plan.seeds[0], setting), init_from_later=True)


def timing_key(config) -> str:
  """Configs with equal keys compile to the same training step: the learning rate and the seed change values
  in it, not its cost, so a grid over learning rates is timed once."""
  c = config.copy_and_resolve_references()
  c.optim.lr, c.seed = 0.0, 0
  return c.to_json(sort_keys=True)


def calibrate(configs: dict[RunKey, object], out: epath.Path, steps: int = 14, lanes: int = 2) -> dict[RunKey, float]:
  """Seconds per training step of each config on one core (median over logged steps 5..steps, compilation
  excluded), from short runs `lanes` at a time, each pinned to its own core as the study's runs will be; one
  run per `timing_key`; cached in out/calibration.json."""
  path = out / 'calibration.json'
  known = {RunKey.parse(k): v for k, v in json.loads(path.read_text()).items()} if path.exists() else {}
  shared: dict[str, list[RunKey]] = {}  # timing key -> the runs it times; the first run's timing serves them all
  for name, c in configs.items():
    if name not in known:
      shared.setdefault(timing_key(c), []).append(name)
  jobs = {}
  for key, (name, *_) in shared.items():
    wd = out / 'calibration' / str(name)
    if wd.exists():
      wd.rmtree()
    cal = configs[name].copy_and_resolve_references()
    cal.num_steps, cal.log_every, cal.eval_every, cal.checkpoint_every = steps, 1, steps, steps
    cal.num_eval_batches = 1
    jobs[key] = Job(wd, cal)
  runner.run_jobs(list(jobs.values()), lanes=min(lanes, os.cpu_count() or 1))
  for key, names in shared.items():
    rates = [r['steps_per_s'] for r in read_metrics(jobs[key].workdir) if r['step'] > 4 and 'steps_per_s' in r]
    known.update(dict.fromkeys(names, 1.0 / statistics.median(rates)))
  workdir_lib.write_json(path, as_json(known), sort_keys=True)
  return known


def as_json(by_key: dict[RunKey, object]) -> dict[str, object]:
  """`by_key` with each RunKey as its str: a JSON object."""
  return {str(k): v for k, v in by_key.items()}


# ---------------------------------------------------------------------------------------------- the runs

def _steps(seconds: float, per_step: float) -> int:
  return max(1, int(seconds / per_step))


def stage_key(method: Method) -> RunKey:
  """The key of the run a method's candidates are tuned as and its teacher comes from: an 'smt_dmt' method's
  SMT stage, any other method's one run."""
  return RunKey(method.name, START) if method.kind == 'smt_dmt' else RunKey(method.name)


def select(config, method: Method, plan: Plan, out: epath.Path, cal: dict[RunKey, float]) -> tuple[str, tuple, dict]:
  """(name, setting, {name: validation score}) of the candidate whose RNN reads the validation split best
  after select_share of the budget (an 'smt_dmt' method: its SMT stage alone), on the first seed."""
  seed, budget, stage = plan.seeds[0], plan.select_share * plan.budget_s, stage_key(method)
  jobs = {name: Job(out / 'select' / method.name / name,
                    with_steps(method_config(config, method, seed, setting, stage=START),
                               _steps(budget, cal[stage.tuned(name)]), 2))
          for name, setting in candidates(method, plan)}
  runner.run_jobs(list(jobs.values()), plan.lanes)
  key = f'rnn_only_{plan.select_by}'
  scores = {name: score(job.workdir, (), plan.num_eval_batches, 'valid')[key] for name, job in jobs.items()}
  pick = max if plan.select_by == 'accuracy' else min
  best = pick(scores, key=scores.get)
  return best, dict(candidates(method, plan))[best], scores


def _continues(method: Method, methods, plan: Plan) -> Method | None:
  """The 'smt_dmt' method whose SMT stage a plain 'smt' method continues (same overrides, neither tuned)."""
  if method.kind != 'smt' or method.drift or candidates(method, plan):
    return None
  return next((m for m in methods if m.kind == 'smt_dmt' and m.overrides == method.overrides
               and not candidates(m, plan)), None)


def seed_jobs(config, methods, plan: Plan, out: epath.Path, seed: int, chosen: dict,
              cal: dict[RunKey, float]) -> dict[RunKey, Job]:
  """Every run of one seed (an 'smt_dmt' method's SMT stage is RunKey(name, START)), each with its chosen
  setting."""
  base, B, share, ev = out / f'seed{seed}', plan.budget_s, plan.dmt_share, plan.evals_per_run
  jobs = {}
  for m in methods:
    if m.kind == 'smt_dmt':
      setting, key, start = chosen.get(m.name, ()), RunKey(m.name), stage_key(m)
      jobs[start] = Job(base / start.dirname, with_steps(method_config(config, m, seed, setting, stage=START),
                                                         _steps((1 - share) * B, cal[start]), ev))
      dmt = with_steps(method_config(config, m, seed, setting), _steps(share * B, cal[key]), max(2, ev // 4))
      dmt.init_from = str(jobs[start].workdir)
      jobs[key] = Job(base / key.dirname, dmt, after=(jobs[start].workdir,))
  for m in methods:
    if m.kind == 'smt_dmt':
      continue
    key = RunKey(m.name)
    c = with_steps(method_config(config, m, seed, chosen.get(m.name, ())), _steps(B, cal[key]), ev)
    parent = _continues(m, methods, plan)
    start = jobs[stage_key(parent)].workdir if parent else None
    jobs[key] = Job(base / key.dirname, c, after=(start,) if start else (), copy_from=start)
  return jobs


def calibration_configs(config, methods, plan: Plan) -> dict[RunKey, object]:
  """The configs timed before anything trains: each method's run (an 'smt_dmt' method's SMT stage; its DMT is
  timed from a trained SMT stage), and each candidate setting of a tuned method (`stage_key(m).tuned(name)`)."""
  seed, out = plan.seeds[0], {}
  for m in methods:
    key = stage_key(m)
    for name, setting in candidates(m, plan):
      out[key.tuned(name)] = method_config(config, m, seed, setting, stage=START)
    if not candidates(m, plan) and _continues(m, methods, plan) is None:  # a continuation runs at its stage's time
      out[key] = method_config(config, m, seed, stage=START)
  return out


# ------------------------------------------------------------------------------------------------ scoring

def curve(workdir, seconds_per_step: float, offset_s: float = 0.0) -> dict:
  """Held-out bits per token and accuracy at each evaluation of a run against calibrated wall-clock seconds."""
  points = [r for r in read_metrics(workdir) if 'rnn_only_loss' in r]
  out = {'seconds': [offset_s + r['step'] * seconds_per_step for r in points],
         'rnn_only_bits': [r['rnn_only_loss'] / LN2 for r in points],
         'rnn_only_accuracy': [r['rnn_only_accuracy'] for r in points]}
  if points and 'teacher_loss' in points[0]:
    out['teacher_bits'] = [r['teacher_loss'] / LN2 for r in points]
    out['teacher_accuracy'] = [r['teacher_accuracy'] for r in points]
  return out


def method_curve(jobs: dict[RunKey, Job], method: Method, cal: dict[RunKey, float]) -> dict:
  """A method's learning curve on one seed; an 'smt_dmt' method's is its SMT stage's, then its DMT's."""
  key = RunKey(method.name)
  if method.kind != 'smt_dmt':
    return curve(jobs[key].workdir, cal[key])
  start = stage_key(method)
  smt = curve(jobs[start].workdir, cal[start])
  offset = jobs[start].config.num_steps * cal[start]
  dmt = curve(jobs[key].workdir, cal[key], offset_s=offset)
  return {k: smt[k] + dmt[k] for k in ('seconds', 'rnn_only_bits', 'rnn_only_accuracy')}


def parameters(config, groups=('cell', 'decoder')) -> int:
  """Parameters of a run's networks: by default the RNN (cell and readout, the readout being the decoder)."""
  shapes = jax.eval_shape(Networks.from_config(config).init, jax.random.PRNGKey(0))
  return int(sum(math.prod(a.shape) for k in groups for a in jax.tree.leaves(shapes[k])))


def _cell(values: list[float]) -> dict:
  st = stats.mean_ci(values)
  return {'mean': st['mean'], 'ci': st['ci'], 'per_seed': values}


def summarize_scores(scores: dict[str, list[dict]], multiples) -> dict:
  """{column: {'<bits|accuracy><sfx>': mean, ci, per seed; 'bits_per_t<sfx>': per seed}} for every suffix."""
  out = {}
  for col, per_seed in scores.items():
    key = 'teacher' if col == 'teacher' else 'rnn_only'
    r = {}
    for sfx in [''] + [f'_x{k}' for k in multiples]:
      for what in ('bits', 'accuracy'):
        r[f'{what}{sfx}'] = _cell([s[f'{key}_{what}{sfx}'] for s in per_seed])
      r[f'bits_per_t{sfx}'] = [s[f'{key}_bits_per_t{sfx}'] for s in per_seed]
    out[col] = r
  return out


# ------------------------------------------------------------------------------------------------ a study

def _choose(config, methods, plan: Plan, out: epath.Path, cal: dict) -> tuple[dict, dict]:
  """Tunes every method that has candidates: ({method: chosen setting}, {method: the selection's record})."""
  chosen, selection = {}, {}
  for m in methods:
    if candidates(m, plan):
      name, setting, scores = select(config, m, plan, out, cal)
      chosen[m.name], cal[stage_key(m)] = setting, cal[stage_key(m).tuned(name)]
      selection[m.name] = {'chosen': name, 'scores': scores, 'by': plan.select_by,
                           'settings': {n: dict(v) for n, v in candidates(m, plan)}}
  return chosen, selection


def tune(config, methods, plan: Plan, out: epath.Path) -> tuple[dict, dict]:
  """Tunes every method that has candidates on `config` alone: ({method: chosen setting}, {method: record})."""
  tuned = [m for m in methods if candidates(m, plan)]
  cal = calibrate(calibration_configs(config, tuned, plan), out, lanes=plan.lanes)
  return _choose(config, methods, plan, out, cal)


def fixed(methods, chosen: dict) -> tuple[Method, ...]:
  """The methods with their chosen settings made part of their overrides (no candidates left to tune)."""
  return tuple(dataclasses.replace(m, overrides=(*m.overrides, *chosen.get(m.name, ())), grid=(), drift=False)
               for m in methods)


def train_all(config, methods, plan: Plan, out: epath.Path) -> tuple[dict, dict, dict]:
  """Calibrates, tunes the methods with candidates, trains every run. Returns (jobs by seed, calibration,
  selection)."""
  cal = calibrate(calibration_configs(config, methods, plan), out, lanes=plan.lanes)
  for m in methods:
    if (parent := _continues(m, methods, plan)) is not None:
      cal[RunKey(m.name)] = cal[stage_key(parent)]
  chosen, selection = _choose(config, methods, plan, out, cal)
  smt_dmt = [m for m in methods if m.kind == 'smt_dmt']
  for m in smt_dmt:  # DMT's step is timed from a trained SMT stage: train the stages first
    cal.setdefault(RunKey(m.name), 1.0)
  first = {s: seed_jobs(config, methods, plan, out, s, chosen, cal) for s in plan.seeds}
  runner.run_jobs([j for jobs in first.values() for k, j in jobs.items() if k.stage == START], plan.lanes)
  for m in smt_dmt:
    c = method_config(config, m, plan.seeds[0], chosen.get(m.name, ()))
    c.init_from = str(first[plan.seeds[0]][stage_key(m)].workdir)
    cal.pop(RunKey(m.name), None)
    cal.update(calibrate({RunKey(m.name): c}, out, lanes=plan.lanes))
  jobs = {s: seed_jobs(config, methods, plan, out, s, chosen, cal) for s in plan.seeds}
  runner.run_jobs([j for per_seed in jobs.values() for j in per_seed.values()], plan.lanes)
  return jobs, cal, selection


def run_study(config, methods: tuple[Method, ...], plan: Plan, out, teacher_of: str | None = None) -> dict:
  """Trains every method for every seed at equal wall clock and scores it; returns the summary (scores with
  means and 95% intervals, learning curves, calibration, tuning choices, runs). `teacher_of`: the 'smt' or
  'smt_dmt' method whose teacher is the 'teacher' column (default: the first SMT method)."""
  out = workdir_lib.as_path(out)
  out.mkdir(parents=True, exist_ok=True)
  check(config, methods, plan)
  t0 = time.perf_counter()
  jobs, cal, selection = train_all(config, methods, plan, out)
  teacher_of = teacher_of or next((m.name for m in methods if m.kind != 'bptt'), None)
  scores, curves = {}, {}
  for m in methods:
    key = RunKey(m.name)
    scores[m.name] = [score(jobs[s][key].workdir, plan.test_multiples, plan.num_eval_batches) for s in plan.seeds]
    curves[m.name] = [method_curve(jobs[s], m, cal) for s in plan.seeds]
  if teacher_of is not None:
    src = stage_key(next(m for m in methods if m.name == teacher_of))
    scores['teacher'] = [score(jobs[s][src].workdir, plan.test_multiples, plan.num_eval_batches) for s in plan.seeds]
    curves['teacher'] = [{k.replace('teacher', 'rnn_only'): v for k, v in curve(jobs[s][src].workdir, cal[src]).items()
                          if k == 'seconds' or k.startswith('teacher')} for s in plan.seeds]
  first = jobs[plan.seeds[0]]
  runs_info = {m.name: {'steps': _steps_text(first, m), 'seconds_per_step': cal[RunKey(m.name)],
                        'parameters': parameters(first[RunKey(m.name)].config),
                        'budget_ratio': budget_ratio(jobs, m, plan)} for m in methods}
  return {'seq_len': config.data.seq_len, 'budget_s': plan.budget_s, 'seeds': list(plan.seeds),
          'dmt_share': plan.dmt_share, 'select_share': plan.select_share, 'test_multiples': list(plan.test_multiples),
          'methods': {m.name: m.label for m in methods}, 'calibration_s_per_step': as_json(cal),
          'selection': selection, 'results': summarize_scores(scores, plan.test_multiples), 'curves': curves,
          'runs': runs_info, 'workdirs': {m.name: str(first[RunKey(m.name)].workdir) for m in methods},
          'study_seconds': time.perf_counter() - t0}


def budget_ratio(jobs: dict[int, dict[RunKey, Job]], method: Method, plan: Plan) -> float:
  """A method's measured training seconds (its stages together) over its budget, the mean over seeds: 1 when
  the calibrated step time held while the study ran; above 1 when the runs were slower (a busy machine)."""
  keys = {stage_key(method), RunKey(method.name)}
  return float(np.mean([sum(trained_seconds(jobs[s][k].workdir) for k in keys) / plan.budget_s for s in plan.seeds]))


def _steps_text(jobs: dict[RunKey, Job], m: Method):
  steps = jobs[RunKey(m.name)].config.num_steps
  return f'{jobs[stage_key(m)].config.num_steps} SMT + {steps} DMT' if m.kind == 'smt_dmt' else steps


