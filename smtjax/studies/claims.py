"""The paper's synthetic claims at equal optimizer steps and batch, each run to a plateau (method.md §10).

For one task config (parallel SMT, resized to the length by `compare.at_length`), four ways of training the
same RNN, all with the config's batch:

- `smt`: SMT for `smt_steps`; the RNN reads from its initial memory;
- `smt_dmt`: that SMT run, then DMT fine-tuning for `dmt_steps` (`variants.parallel_dmt`, a third of SMT's
  learning rate, under the same schedule as every other stage);
- `bptt`: BPTT for smt_steps + dmt_steps (at least as many steps as SMT and DMT together);
- `smt_bptt`: SMT as pretraining, then BPTT fine-tuning of its RNN (from its own initial memory) for dmt_steps:
  the same total steps, SMT in the role the paper gives it where its RNN stays under the teacher.

The same choices for every method: each is tuned on the validation split at the length it is scored at, over
one grid: learning rate x cell (the Transformer updater or a GRU), and for SMT also its drift-robust setting
(none, or 4 rolled steps). Tuning steps: `tune_steps` per SMT candidate, a fifth of that for each fine-tuning
stage, and each BPTT candidate as many as an SMT candidate and its fine-tuning together, as in the seeded runs.
Rows: the same cell for every method (the Transformer: the paper's claim is about one RNN trained two ways) and
each method's best cell. Every stage of every method trains under the config's schedule, which must be
constant: a rate decayed to zero would make any run look converged.

Every run is evaluated `evals` times on the validation split (learning curves); a run has reached its plateau
when the least-squares trend of its RNN's accuracy over the last quarter of its steps, extrapolated over one
common horizon (a quarter of smt_steps + dmt_steps, for every run and stage), changes it by less than `plateau`
(0.01); one that has not is reported as "not converged", never as a win or a loss. The SMT runs' teacher is
gated the same way: where it has not plateaued, the SMT-trained cells say "teacher not converged". Final
scores: the RNN reading whole held-out test sequences from its initial memory (and the SMT teacher from its
prefix memories), mean and 95% interval over seeds. Side columns: seconds per update (one pinned core; a
two-stage row's mean over both stages' updates) and sequential depth per update (dependent cell applications:
SMT `rollout_steps x cell_depth`, BPTT and DMT `T x cell_depth`).

Writes out/claims_<task>_T<T>.{json,md} and a learning-curve figure; runs live under out/<task>/T<T>/ and a
rerun skips finished runs. With `tune_only` the study stops after tuning and writes
out/claims_<task>_T<T>_tuning.{json,md,png}: a pilot of the grid before committing to the seeded runs.

Every summary is built from run records (smtjax/studies/ledger.py): with a ledger file, each finished run is
recorded there (named by its path under out/, with its test scores), a run the ledger holds is not trained
again, and `report=True` writes the tables from the ledger alone, a cell whose runs it lacks saying "not run".
"""

from __future__ import annotations

import dataclasses
import statistics

import numpy as np
from etils import epath

from smtjax import config as config_lib
from smtjax import plotting, variants
from smtjax import workdir as workdir_lib
from smtjax.errors import ConfigError
from smtjax.studies import compare, stats
from smtjax.studies import ledger as ledger_lib
from smtjax.studies.ledger import Ledger
from smtjax.studies.runner import Job, RunKey, run_jobs, score

METHODS = {'smt': 'SMT', 'smt_dmt': 'SMT→DMT', 'bptt': 'BPTT', 'smt_bptt': 'SMT→BPTT'}
DRIFT = {'plain': (), 'roll4': (('smt.rollout_steps', 4),)}


@dataclasses.dataclass(frozen=True)
class Plan:
  """Steps, grid and scoring of a claims study (module docstring)."""
  smt_steps: int
  dmt_steps: int
  seeds: tuple[int, ...] = (0, 1, 2)
  tune_steps: int = 0  # per SMT candidate; 0: no tuning (the first value of each grid axis)
  lrs: tuple[float, ...] = (3e-4, 1e-3, 3e-3)
  cells: tuple[str, ...] = ('transformer', 'gru')
  drifts: tuple[str, ...] = ('plain', 'roll4')
  evals: int = 12
  num_eval_batches: int = 32
  plateau: float = 0.01
  lanes: int = 2
  tune_only: bool = False  # stop after tuning: the grid's validation scores and curves, no seeded runs
  report: bool = False  # train nothing: the tables from the ledger's records (and finished workdirs) alone


@dataclasses.dataclass(frozen=True)
class Setting:
  """One candidate: a learning rate, a cell and (SMT) a drift-robust setting."""
  lr: float
  cell: str
  drift: str = 'plain'

  @property
  def name(self) -> str:
    return f'{self.cell}_lr{self.lr:g}' + ('' if self.drift == 'plain' else f'_{self.drift}')

  def apply(self, c):
    variants.override(c, 'optim.lr', self.lr)
    variants.override(c, 'model.cell', self.cell)
    for field, value in DRIFT[self.drift]:
      variants.override(c, field, value)
    return c


def _steps(c, steps: int, evals: int):
  c.num_steps = max(1, int(steps))
  c.eval_every = max(1, c.num_steps // max(1, evals))
  c.checkpoint_every = c.eval_every  # a killed study resumes each run from its last evaluation
  c.log_every = max(1, min(c.log_every, c.eval_every))
  return c


def configs(config, length: int, setting: Setting, seed: int, smt_steps: int, dmt_steps: int, evals: int,
            num_eval_batches: int, smt_dir: str) -> dict:
  """{method: config} of one setting and seed; the fine-tuning runs start from `smt_dir`."""
  base = compare.at_length(config, length, seed=seed)
  base.eval_split, base.num_eval_batches, base.metrics_flush_secs = 'valid', num_eval_batches, 0.0
  smt = _steps(setting.apply(base.copy_and_resolve_references()), smt_steps, evals)
  plain = dataclasses.replace(setting, drift='plain')
  dmt = plain.apply(base.copy_and_resolve_references())
  dmt = _steps(variants.parallel_dmt(dmt), dmt_steps, evals)
  dmt.optim.schedule, dmt.optim.warmup_frac = base.optim.schedule, base.optim.warmup_frac  # one schedule for all
  dmt.init_from = smt_dir
  bptt = _steps(plain.apply(base.copy_and_resolve_references()), smt_steps + dmt_steps, evals)
  bptt.method = 'bptt'
  tune = _steps(plain.apply(base.copy_and_resolve_references()), dmt_steps, evals)
  tune.method, tune.init_from = 'bptt', smt_dir
  tune.model.initial_memory = 'encoder'  # the RNN keeps the initial memory it learned with under SMT
  tune.optim.lr = dmt.optim.lr
  for stage in (dmt, tune):  # a curriculum (config.curriculum) is the first stage of SMT and BPTT, run alike;
    stage.curriculum.length = stage.curriculum.steps = 0  # the fine-tuning stages start from the SMT run
  return {'smt': smt, 'smt_dmt': dmt, 'bptt': bptt, 'smt_bptt': tune}


def sequential_depth(config) -> int:
  """Dependent cell applications in one update: an SMT step rolls `rollout_steps` cells from teacher memories,
  BPTT and DMT roll T (DMT: Td) of them."""
  d = config.model.cell_depth if config.model.cell == 'transformer' else 1
  if config.method == 'smt':
    return config.smt.rollout_steps * d
  return (config.dmt.rollout if config.method == 'dmt' else config.data.seq_len) * d


# --------------------------------------------------------------------------------------------- curves

def curve(record: dict, key: str = 'rnn_only_accuracy', offset: int = 0) -> dict:
  """{'steps', 'values'} of `key` at each periodic evaluation of a recorded run (steps shifted by `offset`)."""
  return ledger_lib.curve(record, key, offset)


def joined(first: dict, second: dict) -> dict:
  return {k: first[k] + second[k] for k in ('steps', 'values')}


def last_quarter_change(c: dict, horizon: float | None = None) -> float:
  """The change of a curve over the last quarter of its steps: the least-squares slope of its evaluations
  from 3/4 of the steps on (at least the last 3), times `horizon` steps (default: a quarter of the steps; a
  study gives every run the same horizon, so that a short run is not judged over fewer steps); NaN with fewer
  than 2 points."""
  steps, values = np.asarray(c['steps'], float), np.asarray(c['values'], float)
  ok = np.isfinite(values)
  steps, values = steps[ok], values[ok]
  if len(steps) < 2:
    return float('nan')
  keep = steps >= 0.75 * steps[-1]
  if keep.sum() < 3:
    keep = np.arange(len(steps)) >= len(steps) - 3
  s, v = steps[keep], values[keep]
  if len(s) < 2 or np.ptp(s) == 0:
    return float('nan')
  slope = np.polyfit(s, v, 1)[0]
  return float(slope * (steps[-1] / 4 if horizon is None else horizon))


def horizon(smt_steps: int, dmt_steps: int) -> float:
  """The steps over which every run's plateau is judged: a quarter of the longest run's (BPTT's) steps."""
  return (smt_steps + dmt_steps) / 4


def tuning_horizon(tune_steps: int) -> float:
  """The tuning runs' common horizon: a quarter of the longest candidate's (BPTT's) steps."""
  return (tune_steps + _fine(tune_steps)) / 4


def _fine(tune_steps: int) -> int:
  """Tuning steps of a fine-tuning stage."""
  return max(1, tune_steps // 5)


def _mean_curve(curves: list[dict]) -> dict:
  """Mean and 95% interval over seeds at each evaluation step the seeds share."""
  steps = sorted(set.intersection(*(set(c['steps']) for c in curves))) if curves else []
  at = [dict(zip(c['steps'], c['values'])) for c in curves]
  cells = [stats.mean_ci([a[s] for a in at]) for s in steps]
  return {'steps': steps, 'mean': [c['mean'] for c in cells], 'ci': [c['ci'] for c in cells]}


# ---------------------------------------------------------------------------------------------- the study

def _check(config, lengths, plan: Plan):
  if config.method != 'smt' or config.smt.mode != 'parallel':
    raise ConfigError("a claims study starts from parallel SMT: config.method='smt', config.smt.mode='parallel'")
  if config.optim.schedule != 'constant':
    raise ConfigError(f"config.optim.schedule: a claims study judges each run's plateau, which a rate decayed to "
                      f"zero fakes; use 'constant' (a warm-up is fine), got {config.optim.schedule!r}")
  for field, ok, need in (('smt_steps', plan.smt_steps >= 1, '>= 1'), ('dmt_steps', plan.dmt_steps >= 1, '>= 1'),
                          ('tune_steps', plan.tune_steps >= 0, '>= 0 (0: no tuning)'),
                          ('seeds', bool(plan.seeds), 'at least one seed'),
                          ('evals', plan.evals >= 4, '>= 4 (a plateau is judged on the last quarter\'s evaluations)'),
                          ('lanes', plan.lanes >= 0, '>= 0 (0: every run in this process)')):
    if not ok:
      raise ConfigError(f'bad plan: {field} must be {need}, got {getattr(plan, field)!r}')
  unknown = [d for d in plan.drifts if d not in DRIFT]
  if unknown or not plan.lrs or not plan.cells or not plan.drifts:
    raise ConfigError(f'bad grid: lrs {plan.lrs}, cells {plan.cells}, drifts {plan.drifts} (known drifts: '
                      f'{", ".join(DRIFT)})')
  if plan.tune_steps > 0 and 'plain' not in plan.drifts:
    raise ConfigError(f"bad grid: drifts {plan.drifts} without 'plain' (the fine-tuning methods' candidates start "
                      "from the plain SMT candidate, which tuning must train)")
  for L in lengths:
    for s in _grid(plan, 'smt'):
      for c in configs(config, L, s, plan.seeds[0], plan.smt_steps, plan.dmt_steps, plan.evals, plan.num_eval_batches,
                       '').values():  # the SMT run the fine-tuning stages start from does not exist yet
        config_lib.validate(c, init_from_later=True)


def _grid(plan: Plan, method: str) -> list[Setting]:
  drifts = plan.drifts if method == 'smt' else ('plain',)
  return [Setting(lr, cell, d) for cell in plan.cells for lr in plan.lrs for d in drifts]


def _named(job: Job, root: epath.Path) -> Job:
  """The job named by its workdir's path under the study's output folder: the same on every machine."""
  return dataclasses.replace(job, name=str(job.workdir.relative_to(root)))


def _scorer(plan: Plan):
  """A finished run's test scores (the RNN, and an SMT run's teacher), recorded with it."""
  return lambda job: score(job.workdir, (), plan.num_eval_batches, 'test')


def tune(config, length: int, plan: Plan, out: epath.Path, ledger: Ledger | None = None,
         root: epath.Path | None = None) -> dict:
  """Every method's validation accuracy for every candidate and its choice, same-cell (the first cell) and
  best cell: {method: {'scores': {name: acc}, 'teacher': {name: acc} (SMT candidates), 'curves': {name: curve},
  'steps': tuning steps in all, 'same_cell': Setting, 'best': Setting}}. Without tune_steps: the first value of
  each grid axis for every method."""
  if plan.tune_steps == 0:
    first = Setting(plan.lrs[0], plan.cells[0], plan.drifts[0])
    plain = dataclasses.replace(first, drift='plain')
    return {m: {'scores': {}, 'teacher': {}, 'curves': {}, 'steps': 0, 'same_cell': first if m == 'smt' else plain,
                'best': first if m == 'smt' else plain} for m in METHODS}
  n, fine = plan.tune_steps, _fine(plan.tune_steps)
  seed, base = plan.seeds[0], out / 'tune'
  jobs, runs = [], {m: {} for m in METHODS}
  smt_grid, pair_grid = _grid(plan, 'smt'), _grid(plan, 'bptt')
  bptt_steps = n + fine  # as many as a fine-tuning method's candidate: its SMT stage and its own
  # One (cell, lr) after another, each with every method's candidate: a tuning pass cut short (the runs resume)
  # has complete comparisons for the settings it reached, the same-cell ones first.
  for s in pair_grid:
    smt_dir = base / 'smt' / s.name
    for d in [x for x in smt_grid if (x.cell, x.lr) == (s.cell, s.lr)]:
      cs = configs(config, length, d, seed, n, fine, plan.evals, plan.num_eval_batches, str(base / 'smt' / d.name))
      jobs.append(Job(base / 'smt' / d.name, cs['smt']))
      runs['smt'][d.name] = (d, base / 'smt' / d.name)
    cs = configs(config, length, s, seed, n, fine, plan.evals, plan.num_eval_batches, str(smt_dir))
    bptt = _steps(cs['bptt'], bptt_steps, plan.evals)
    jobs.append(Job(base / 'bptt' / s.name, bptt))
    runs['bptt'][s.name] = (s, base / 'bptt' / s.name)
    for m in ('smt_dmt', 'smt_bptt'):
      jobs.append(Job(base / m / s.name, cs[m], after=(smt_dir,)))
      runs[m][s.name] = (s, base / m / s.name)
  ledger = Ledger() if ledger is None else ledger
  jobs = [_named(j, root or out) for j in jobs]
  records = run_jobs(jobs, plan.lanes, ledger, train_missing=not plan.report)
  missing = [str(j.workdir) for j in jobs if records[str(j.workdir)] is None]
  if missing:
    raise ConfigError(f'report: the ledger {ledger.path} lacks {len(missing)} tuning runs, e.g. {missing[0]}')
  out_ = {}
  for m, cands in runs.items():
    finals = {name: records[str(wd)]['final'] for name, (_, wd) in cands.items()}  # the last validation scores
    scores = {name: f['rnn_only_accuracy'] for name, f in finals.items()}
    teacher = {name: f['teacher_accuracy'] for name, f in finals.items() if m == 'smt' and 'teacher_accuracy' in f}
    curves = {name: {'rnn': curve(records[str(wd)]),
                     **({'teacher': curve(records[str(wd)], 'teacher_accuracy')} if name in teacher else {})}
              for name, (_, wd) in cands.items()}
    same = {k: v for k, v in scores.items() if cands[k][0].cell == plan.cells[0]}
    steps = n * len(smt_grid) if m == 'smt' else (n + fine) * len(pair_grid)
    out_[m] = {'scores': scores, 'teacher': teacher, 'curves': curves, 'steps': steps,
               'same_cell': cands[max(same, key=same.get)][0], 'best': cands[max(scores, key=scores.get)][0]}
  return out_


def _row_jobs(config, length: int, plan: Plan, chosen: dict, row: str, base: epath.Path) -> dict:
  """{(method, seed): (Job, SMT Job or None)} of one row ('same_cell' or 'best')."""
  jobs = {}
  for m in METHODS:
    s = chosen[m][row]
    smt_setting = s if m == 'smt' else dataclasses.replace(s, drift='plain')
    own, smt_key = RunKey(m, candidate=s.name), RunKey('smt', candidate=smt_setting.name)
    for seed in plan.seeds:
      smt_dir = base / f'seed{seed}' / smt_key.dirname
      cs = configs(config, length, smt_setting, seed, plan.smt_steps, plan.dmt_steps, plan.evals,
                   plan.num_eval_batches, str(smt_dir))
      smt_job = Job(smt_dir, cs['smt'])
      if m == 'smt':
        jobs[(m, seed)] = (smt_job, None)
      elif m == 'bptt':
        jobs[(m, seed)] = (Job(base / f'seed{seed}' / own.dirname, cs['bptt']), None)
      else:
        jobs[(m, seed)] = (Job(base / f'seed{seed}' / own.dirname, cs[m], after=(smt_dir,)), smt_job)
  return jobs


def _result(plan: Plan, m: str, setting: Setting, pairs: list, records: dict) -> dict:
  """A cell from its runs' records: test scores over seeds, the validation curve, convergence (of the method's
  own last stage: a fine-tuning run's plateau is its own; every run judged over the plan's `horizon`), cost (a
  two-stage row's seconds per update over both stages' updates). A cell whose records are not all there (a
  report from a ledger that lacks some) is {'name', 'missing': how many runs}."""
  runs = [j for pair in pairs for j in pair if j is not None]
  lacking = sum(records.get(str(j.workdir)) is None for j in runs)
  if lacking:
    return {'method': m, 'name': setting.name, 'missing': lacking, 'runs': len(runs)}
  per_seed, curves, teacher_curves, seconds = [], [], [], []
  over = horizon(plan.smt_steps, plan.dmt_steps)
  for job, smt_job in pairs:
    rec = records[str(job.workdir)]
    smt_rec = None if smt_job is None else records[str(smt_job.workdir)]
    sc = rec['scores']
    own = curve(rec)
    whole = own if smt_rec is None else joined(curve(smt_rec), curve(rec, offset=smt_rec['steps']))
    stages = [rec] if smt_rec is None else [smt_rec, rec]
    seconds.append(sum(r['seconds_per_update'] * r['steps'] for r in stages) / sum(r['steps'] for r in stages))
    teacher_src = smt_rec or (rec if m == 'smt' else None)
    teacher = float('nan')
    if teacher_src is not None:
      teacher_curves.append(curve(teacher_src, 'teacher_accuracy'))
      teacher = teacher_src['scores']['teacher_accuracy']
    per_seed.append({'accuracy': sc['rnn_only_accuracy'], 'bits': sc['rnn_only_bits'], 'teacher_accuracy': teacher,
                     'change': last_quarter_change(own, over), 'run': rec['name']})
    curves.append(whole)
  changes = [p['change'] for p in per_seed]
  cell = {'method': m, 'setting': dataclasses.asdict(setting), 'name': setting.name, 'per_seed': per_seed,
          'steps': curves[0]['steps'][-1] if curves[0]['steps'] else 0,
          'converged': all(abs(x) < plan.plateau for x in changes), 'change': max(changes, key=abs),
          'curve': _mean_curve(curves), 'seconds_per_update': statistics.median(seconds),
          'sequential_depth': sequential_depth(pairs[0][0].config)}
  for key in ('accuracy', 'bits', 'teacher_accuracy'):
    st = stats.mean_ci([p[key] for p in per_seed])
    cell[key], cell[f'{key}_ci'] = st['mean'], st['ci']
  if teacher_curves:
    t_changes = [last_quarter_change(t, over) for t in teacher_curves]
    cell['teacher_change'] = max(t_changes, key=abs)
    cell['teacher_converged'] = all(abs(x) < plan.plateau for x in t_changes)
    cell['teacher_curve'] = _mean_curve(teacher_curves)
  return cell


def run_claims(config, lengths, plan: Plan, out, ledger: str | None = None) -> dict:
  """Tunes, trains and scores every method at each length (module docstring), recording every finished run in
  the `ledger` file (if given); returns {str(T): summary}."""
  out = workdir_lib.as_path(out)
  lengths = [int(x) for x in lengths]
  _check(config, lengths, plan)
  book = Ledger(ledger)
  out.mkdir(parents=True, exist_ok=True)
  task, results = config.data.name, {}
  for L in lengths:
    base = out / task / f'T{L}'
    chosen = tune(config, L, plan, base, book, out)
    tuning = {m: {'scores': v['scores'], 'teacher': v['teacher'], 'curves': v['curves'], 'steps': v['steps'],
                  'same_cell': v['same_cell'].name, 'best': v['best'].name} for m, v in chosen.items()}
    if plan.tune_only:
      results[str(L)] = _write_tuning(config, L, plan, tuning, out)
      continue
    rows = {row: _row_jobs(config, L, plan, chosen, row, base) for row in ('same_cell', 'best')}
    jobs = {str(j.workdir): _named(j, out) for r in rows.values() for pair in r.values() for j in pair
            if j is not None}
    records = run_jobs(list(jobs.values()), plan.lanes, book, _scorer(plan), train_missing=not plan.report)
    summary = {**_head(config, L, plan), 'tuning': tuning,
               'rows': {row: {m: _result(plan, m, chosen[m][row], [r[(m, s)] for s in plan.seeds], records)
                              for m in METHODS} for row, r in rows.items()}}
    name = f'claims_{task}_T{L}'
    workdir_lib.write_json(out / f'{name}.json', summary)
    write_table(summary, out / f'{name}.md')
    plotting.claims_curves(workdir_lib.json_safe(summary), out / f'{name}.png', METHODS)
    results[str(L)] = summary
  return results


def _head(config, length: int, plan: Plan) -> dict:
  return {'task': config.data.name, 'T': compare.at_length(config, length).data.seq_len, 'length': length,
          'plan': {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(plan).items()}}


def _write_tuning(config, length: int, plan: Plan, tuning: dict, out: epath.Path) -> dict:
  """A tuning-only study: OUT/claims_<task>_T<T>_tuning.{json,md,png}."""
  summary = {**_head(config, length, plan), 'tuning': tuning}
  name = f'claims_{summary["task"]}_T{length}_tuning'
  workdir_lib.write_json(out / f'{name}.json', summary)
  write_tuning_table(summary, out / f'{name}.md')
  plotting.tuning_curves(workdir_lib.json_safe(tuning), out / f'{name}.png', METHODS,
                         f'{summary["task"]} T={summary["T"]}')
  return summary


def write_tuning_table(summary: dict, path) -> str:
  """Markdown: every candidate of every method after its tuning steps, with the last-quarter change of its RNN's
  and (SMT) its teacher's validation curves, then each method's tuning steps and choices."""
  steps = tuning_horizon(summary['plan']['tune_steps'])

  def change(c):
    return f'{last_quarter_change(c, steps):+.3f}' if c else '-'

  rows = []
  for m, t in summary['tuning'].items():
    for name, acc in sorted(t['scores'].items(), key=lambda kv: -kv[1]):
      c = t['curves'][name]
      rows.append([METHODS[m], name, c['rnn']['steps'][-1] if c['rnn']['steps'] else 0, f'{acc:.3f}',
                   f'{t["teacher"][name]:.3f}' if name in t['teacher'] else '-', change(c['rnn']),
                   change(c.get('teacher'))])
  seed = summary['plan']['seeds'][0]
  lines = [f'# {summary["task"]} at T={summary["T"]}: tuning on the validation split (seed {seed})', '',
           'Every candidate of every method after its tuning steps: the RNN reading whole validation sequences from '
           'its initial memory and the SMT teacher, each with the change of its validation curve: the trend over '
           f'its last quarter, over {steps:g} steps for every candidate (plateau: below {summary["plan"]["plateau"]}).',
           '']
  lines += stats.table(['method', 'candidate', 'steps', 'RNN accuracy', 'teacher accuracy', 'change', 'teacher change'],
                       rows)
  lines += ['', *[f'- {METHODS[m]}: {t["steps"]} tuning steps in all; same cell {t["same_cell"]}, best {t["best"]}'
                  for m, t in summary['tuning'].items()]]
  return stats.write_markdown(path, lines)


def _verdict(cell: dict) -> str:
  if 'missing' in cell:
    return f'not run ({cell["missing"]} of {cell["runs"]} runs missing)'
  if cell.get('teacher_converged') is False:
    return 'teacher not converged'
  return 'plateau' if cell['converged'] else 'not converged'


def write_table(summary: dict, path) -> str:
  """Markdown: per row (same cell, best cell) and method, the setting, steps, cost and the RNN's test accuracy
  (mean ± 95% interval over seeds), the last-quarter change and the verdict; then the tuning scores."""
  seeds = summary['plan']['seeds']
  lines = [f'# {summary["task"]} at T={summary["T"]}: SMT, SMT→DMT, BPTT and SMT→BPTT at equal steps', '',
           f'Batch and steps equal per row; seeds {", ".join(map(str, seeds))}: mean ± 95% t-interval. Accuracy: the '
           'RNN reading whole held-out test sequences from its initial memory; teacher: the SMT run\'s. Change: the '
           'trend of validation accuracy over the last quarter of each run\'s own steps, over '
           f'{horizon(summary["plan"]["smt_steps"], summary["plan"]["dmt_steps"]):g} steps for every run '
           f'(plateau: below {summary["plan"]["plateau"]}). s/update: seconds per update on one core, over both '
           'stages of a two-stage row.', '']
  lines += stats.table(
      ['row', 'method', 'setting', 'steps', 's/update', 'sequential depth', 'RNN accuracy', 'teacher accuracy',
       'change', 'verdict'],
      [[row.replace('_', ' '), METHODS[m], c['name'], *(['-'] * 6 if 'missing' in c else [
          c['steps'], f'{c["seconds_per_update"]:.3f}', c['sequential_depth'],
          stats.fmt(c['accuracy'], c['accuracy_ci']),
          stats.fmt(c.get('teacher_accuracy'), c.get('teacher_accuracy_ci')), f'{c["change"]:+.3f}']), _verdict(c)]
       for row, cells in summary['rows'].items() for m, c in cells.items()])
  lines += ['', '## Tuning (validation accuracy, first seed)', '']
  for m, t in summary['tuning'].items():
    scores = ', '.join(f'{k} {v:.3f}' for k, v in sorted(t['scores'].items(), key=lambda kv: -kv[1]))
    lines.append(f'- {METHODS[m]} ({t["steps"]} tuning steps): same cell {t["same_cell"]}, best {t["best"]}'
                 + (f'; {scores}' if scores else ''))
  return stats.write_markdown(path, lines)
