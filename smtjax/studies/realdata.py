"""Real data at equal wall clock: SMT, SMT->DMT, drift-robust SMT and BPTT (Transformer cell and GRU).

From one config (e.g. configs/tinystories.py:cpu) and a budget of seconds per method, for every seed:

- `smt`: SMT (parallel mode) for the whole budget; its Transformer teacher is the `teacher` column;
- `smt_dmt`: SMT for (1 - dmt_share) of the budget, then DMT fine-tuning for the rest;
- `smt_drift`: SMT with the drift-robust setting that scored best on the validation split (chosen once, on
  the first seed, from `drift_grid`, at `select_share` of the budget), for the whole budget;
- `bptt`: BPTT with the same Transformer cell and readout, for the whole budget;
- `bptt_gru`: BPTT with a GRU cell over the same memory (and the same readout), for the whole budget.

Equal wall clock is enforced through step counts: every method's training step is first timed on one core
(a short run of `experiments.run`, compilation excluded; `calibration.json`), and each run gets
budget / (seconds per step) steps. Runs then train in `lanes` parallel processes, each pinned to its own core
with single-threaded XLA, so their step times stay those measured. Every run is scored on the held-out test
split: the RNN reading whole sequences from its initial memory (`rnn_only`), in bits per token, per
position, and at `test_multiple` times the training length; the teacher from the encoder's prefix memories.
Outputs in `out`: `realdata_<name>.{json,md}`, learning curves against wall clock (`curves_<name>.png`), loss
by position (`positions_<name>.png`) and samples (`samples_<name>.md`, with `.png` grids for images).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from etils import epath

from smtjax import config as config_lib
from smtjax import inference, plotting, runs, variants
from smtjax import workdir as workdir_lib
from smtjax.data import make_source, visualize
from smtjax.errors import ConfigError
from smtjax.evaluation import EvalSpec, Evaluator
from smtjax.metrics import read_metrics
from smtjax.models import Networks
from smtjax.studies import stats

METHODS = ('smt', 'smt_dmt', 'smt_drift', 'bptt', 'bptt_gru')
COLUMNS = ('teacher',) + METHODS
NAMES = {'teacher': 'Transformer teacher', 'smt': 'SMT', 'smt_dmt': 'SMT→DMT', 'smt_drift': 'SMT, drift-robust',
         'bptt': 'BPTT, Transformer cell', 'bptt_gru': 'BPTT, GRU'}
DEFAULT_DRIFT_GRID = {'roll4': {'rollout_steps': 4}, 'roll4_dec': {'rollout_steps': 4, 'rollout_decode': 1.0},
                      'noise1': {'memory_noise': 1.0, 'memory_noise_mode': 'matched'}}
ONE_CORE = '--xla_cpu_multi_thread_eigen=false'
LN2 = math.log(2)


@dataclasses.dataclass(frozen=True)
class Plan:
  """What the study runs (see the module docstring)."""
  budget_s: float
  seeds: tuple[int, ...]
  dmt_share: float = 0.25
  select_share: float = 0.5
  drift_grid: tuple[tuple[str, tuple], ...] = tuple((k, tuple(v.items())) for k, v in DEFAULT_DRIFT_GRID.items())
  lanes: int = 2
  evals_per_run: int = 8
  num_eval_batches: int = 16
  test_multiple: int = 2


# ------------------------------------------------------------------------------------------------ configs

def _base(config, seed: int):
  c = config.copy_and_resolve_references()
  c.seed, c.progress_bar, c.metrics_flush_secs = int(seed), False, 0.0
  return c


def method_config(config, method: str, seed: int, drift: dict | None = None):
  """The config of one method (steps not yet set): SMT as given, BPTT with the same cell or a GRU, DMT
  after SMT (`variants.parallel_dmt`), drift-robust SMT with `drift`'s config.smt overrides."""
  c = _base(config, seed)
  if method == 'smt_dmt':
    return variants.parallel_dmt(c)
  if method == 'smt_drift':
    for k, v in (drift or {}).items():
      variants.override(c, f'smt.{k}', v)
  if method in ('bptt', 'bptt_gru'):
    c.method = 'bptt'
    c.model.cell = 'gru' if method == 'bptt_gru' else c.model.cell
  return c


def with_steps(config, steps: int, evals: int):
  """`config` trained for `steps` steps, evaluated `evals` times (learning curves) and checkpointed at the end."""
  c = config.copy_and_resolve_references()
  c.num_steps = max(1, int(steps))
  c.eval_every = max(1, c.num_steps // max(1, evals))
  c.checkpoint_every = c.num_steps
  c.log_every = max(1, min(c.log_every, c.eval_every))
  return c


# ------------------------------------------------------------------------------------------------- jobs

def _launch(workdir: epath.Path, core: int | None) -> subprocess.Popen:
  """`python -m experiments.run --workdir=W` on the saved config.json, pinned to `core` (one XLA thread)."""
  env = dict(os.environ)
  cmd = [sys.executable, '-m', 'experiments.run', f'--workdir={workdir}']
  if core is not None:
    env['XLA_FLAGS'] = f"{env.get('XLA_FLAGS', '')} {ONE_CORE}".strip()
    cmd = ['taskset', '-c', str(core)] + cmd
  log = open(workdir / 'run.log', 'ab')  # noqa: SIM115  (closed when the process ends: see run_jobs)
  return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


@dataclasses.dataclass(frozen=True)
class Job:
  """Train `config` in `workdir` once the workdirs in `after` are done; `copy_from`: start from a copy of that
  (finished) workdir, so the run continues its checkpoint."""
  workdir: epath.Path
  config: object
  after: tuple = ()
  copy_from: epath.Path | None = None


def _done(job: Job) -> bool:
  if not (job.workdir / 'metrics.jsonl').exists():
    return False
  return any(r['step'] == job.config.num_steps and 'rnn_only_loss' in r for r in read_metrics(job.workdir))


def _start(job: Job, core: int | None) -> subprocess.Popen:
  if job.copy_from is not None and not (job.workdir / 'checkpoints').exists():
    shutil.copytree(job.copy_from, job.workdir, dirs_exist_ok=True)
  job.workdir.mkdir(parents=True, exist_ok=True)
  workdir_lib.save_config(job.config, job.workdir)
  logging.info('training %s (%d steps) on core %s', job.workdir, job.config.num_steps, core)
  return _launch(job.workdir, core)


def run_jobs(jobs: list[Job], lanes: int) -> None:
  """Trains every job whose workdir is not finished, `lanes` at a time, each pinned to its own core; a job
  starts once the workdirs it depends on are done. A failed job raises, naming its log."""
  pending = [j for j in jobs if not _done(j)]
  finished = {str(j.workdir) for j in jobs if j not in pending}
  running: dict[int, tuple[Job, subprocess.Popen]] = {}
  while pending or running:
    for core in [c for c in range(lanes) if c not in running]:
      ready = next((j for j in pending if all(str(d) in finished for d in j.after)), None)
      if ready is None:
        break
      pending.remove(ready)
      running[core] = (ready, _start(ready, core if lanes > 1 else None))
    if not running:
      raise RuntimeError(f'jobs wait for workdirs that no job trains: {[str(j.workdir) for j in pending]}')
    time.sleep(2)
    for core, (job, proc) in list(running.items()):
      if proc.poll() is not None:
        del running[core]
        if proc.returncode != 0:
          raise RuntimeError(f'training {job.workdir} failed (exit {proc.returncode}); see {job.workdir / "run.log"}')
        finished.add(str(job.workdir))


def calibrate(configs: dict, out: epath.Path, steps: int = 14) -> dict[str, float]:
  """Seconds per training step of each config on one core (median over logged steps 5..steps, compilation
  excluded), from short runs; cached in out/calibration.json."""
  path = out / 'calibration.json'
  known = json.loads(path.read_text()) if path.exists() else {}
  todo = {k: c for k, c in configs.items() if k not in known}
  for name, c in todo.items():  # one at a time: each alone on its core
    wd = out / 'calibration' / name
    if wd.exists():
      shutil.rmtree(wd)
    cal = c.copy_and_resolve_references()
    cal.num_steps, cal.log_every, cal.eval_every, cal.checkpoint_every = steps, 1, steps, steps
    cal.num_eval_batches = 1
    run_jobs([Job(wd, cal)], lanes=min(2, os.cpu_count() or 1))
    rates = [r['steps_per_s'] for r in read_metrics(wd) if r['step'] > 4 and 'steps_per_s' in r]
    known[name] = 1.0 / statistics.median(rates)
    workdir_lib.write_text(path, json.dumps(known, indent=2, sort_keys=True))
  return known


# ---------------------------------------------------------------------------------------------- the runs

def _steps(seconds: float, per_step: float) -> int:
  return max(1, int(seconds / per_step))


def select_drift(config, plan: Plan, out: epath.Path, cal: dict) -> tuple[str, dict, dict]:
  """(name, config.smt overrides, {name: validation rnn_only bits}) of the drift-robust setting whose RNN
  reads the validation split best after select_share of the budget, on the first seed."""
  seed, budget = plan.seeds[0], plan.select_share * plan.budget_s
  jobs, scores = {}, {}
  for name, items in plan.drift_grid:
    c = method_config(config, 'smt_drift', seed, dict(items))
    jobs[name] = Job(out / 'select' / name, with_steps(c, _steps(budget, cal[f'drift_{name}']), 2))
  run_jobs(list(jobs.values()), plan.lanes)
  for name, job in jobs.items():
    scores[name] = score(job.workdir, multiple=1, num_batches=plan.num_eval_batches, split='valid')['rnn_only_bits']
  best = min(scores, key=scores.get)
  return best, dict(dict(plan.drift_grid)[best]), scores


def seed_jobs(config, plan: Plan, out: epath.Path, seed: int, drift: dict, cal: dict) -> dict[str, Job]:
  """The runs of one seed: SMT first for (1 - dmt_share) of the budget (`smt_start`), then both its
  continuation to the whole budget (`smt`) and DMT from it (`smt_dmt`); drift-robust SMT and the BPTTs."""
  base, B, share, ev = out / f'seed{seed}', plan.budget_s, plan.dmt_share, plan.evals_per_run
  smt = method_config(config, 'smt', seed)
  start = base / 'smt_start'
  jobs = {'smt_start': Job(start, with_steps(smt, _steps((1 - share) * B, cal['smt']), ev))}
  jobs['smt'] = Job(base / 'smt', with_steps(smt, _steps(B, cal['smt']), ev), after=(start,), copy_from=start)
  dmt = with_steps(method_config(config, 'smt_dmt', seed), _steps(share * B, cal['smt_dmt']), max(2, ev // 4))
  dmt.init_from = str(start)
  jobs['smt_dmt'] = Job(base / 'smt_dmt', dmt, after=(start,))
  jobs['smt_drift'] = Job(base / 'smt_drift', with_steps(method_config(config, 'smt_drift', seed, drift),
                                                          _steps(B, cal['smt_drift']), ev))
  for m in ('bptt', 'bptt_gru'):
    jobs[m] = Job(base / m, with_steps(method_config(config, m, seed), _steps(B, cal[m]), ev))
  return jobs


def calibration_configs(config, plan: Plan) -> dict:
  """The configs whose step is timed before anything trains: SMT, the BPTTs, and each drift-robust setting
  of the grid (DMT is timed from a trained SMT run: `calibrate_dmt`)."""
  seed = plan.seeds[0]
  out = {m: method_config(config, m, seed) for m in ('smt', 'bptt', 'bptt_gru')}
  for name, items in plan.drift_grid:
    out[f'drift_{name}'] = method_config(config, 'smt_drift', seed, dict(items))
  return out


def calibrate_dmt(config, plan: Plan, out: epath.Path, smt_workdir: epath.Path) -> dict[str, float]:
  c = method_config(config, 'smt_dmt', plan.seeds[0])
  c.init_from = str(smt_workdir)
  return calibrate({'smt_dmt': c}, out)


# ------------------------------------------------------------------------------------------------ scoring

def score(workdir, multiple: int, num_batches: int, split: str = 'test') -> dict:
  """A trained run on held-out sequences of its training length T and of multiple * T: the RNN from its
  initial memory (and, for an SMT run, the teacher), overall and per position, in bits per token."""
  config, params, nets, _ = runs.load_run(str(workdir))
  T, out = config.data.seq_len, {}
  for k in sorted({1, multiple}):
    c = runs.at_seq_len(config, k * T)
    spec = EvalSpec(teacher=config.method == 'smt', per_position=True)
    m = Evaluator(c, nets, spec)(params, make_source(c.data, c.seed), num_batches, split)
    suffix = '' if k == 1 else f'_x{k}'
    for name in ('rnn_only', 'teacher'):
      if f'{name}_loss' in m:
        out[f'{name}_bits{suffix}'] = m[f'{name}_loss'] / LN2
        out[f'{name}_bits_per_t{suffix}'] = [v / LN2 for v in m[f'{name}_loss_per_t']]
  return out


def curve(workdir, seconds_per_step: float, offset_s: float = 0.0, start_step: int = 0) -> dict:
  """Held-out bits per token at each evaluation of a run against calibrated wall-clock seconds."""
  points = [r for r in read_metrics(workdir) if 'rnn_only_loss' in r and r['step'] > start_step]
  out = {'seconds': [offset_s + (r['step'] - start_step) * seconds_per_step for r in points],
         'rnn_only_bits': [r['rnn_only_loss'] / LN2 for r in points]}
  if points and 'teacher_loss' in points[0]:
    out['teacher_bits'] = [r['teacher_loss'] / LN2 for r in points]
  return out


def method_curves(jobs: dict[str, Job], cal: dict) -> dict[str, dict]:
  """Learning curves of one seed: SMT's run (its first part is SMT→DMT's start too), DMT after it."""
  start = jobs['smt_start'].config.num_steps
  out = {m: curve(jobs[m].workdir, cal[m]) for m in ('smt', 'smt_drift', 'bptt', 'bptt_gru')}
  smt_part = curve(jobs['smt_start'].workdir, cal['smt'])
  dmt_part = curve(jobs['smt_dmt'].workdir, cal['smt_dmt'], offset_s=start * cal['smt'])
  out['smt_dmt'] = {k: smt_part[k] + dmt_part[k] for k in ('seconds', 'rnn_only_bits')}
  out['teacher'] = {'seconds': out['smt']['seconds'], 'rnn_only_bits': out['smt']['teacher_bits']}
  return out


# ------------------------------------------------------------------------------------------------ samples

def _prompts(config, source, num: int) -> tuple[np.ndarray, int]:
  """(prompts [num, P], continuation length): image data: the top halves of the first test images (each
  starts an image); text: the first half of held-out windows, continued for 1.5 training lengths."""
  info, T = source.info, config.data.seq_len
  if info.kind == 'image':
    P = math.prod(info.image_shape)
    stream = source.stream('test')[:num * P].reshape(num, P)
    return np.asarray(stream[:, :P // 2], np.int32), P - P // 2
  x = source.get_batch('test', 0, 0, num)['x']
  return np.asarray(x[:, :T // 2], np.int32), 3 * T // 2


def write_samples(workdirs: dict[str, epath.Path], out: epath.Path, name: str, num: int = 4,
                  temperature: float = 0.7, seed: int = 0) -> epath.Path:
  """Continuations of the same held-out prompts by the teacher (re-encoding its last T tokens every step) and
  by each method's RNN alone (reading the prompt from its initial memory): samples_<name>.md, and for images
  one PNG grid per writer (prompt on top, continuation below)."""
  lines = [f'# Samples: {name}', '', f'Temperature {temperature}, seed {seed}; prompts from the held-out test split.',
           '']
  for col in COLUMNS:
    config, params, nets, source = runs.load_run(str(workdirs['smt' if col == 'teacher' else col]))
    prompt, length = _prompts(config, source, num)
    rng, p = jax.random.PRNGKey(seed), jnp.asarray(prompt)
    if col == 'teacher':
      toks = inference.teacher_generate(nets, params, p, length, config.data.seq_len, temperature, rng)
    else:
      toks = inference.rnn_generate(nets, params, num, length, temperature, rng, prompt=p)
    toks = np.asarray(jax.device_get(toks))
    lines.append(f'## {NAMES[col]}')
    if source.info.kind == 'image':
      png = out / f'samples_{name}_{col}.png'
      visualize.save_image_grid(source.info, np.concatenate([prompt, toks], axis=1), png, cols=num)
      lines += ['', f'![{NAMES[col]}]({png.name})', '']
    else:
      for a, b in zip(visualize.batch_to_text(source.info, prompt), visualize.batch_to_text(source.info, toks)):
        lines += ['', f'> {a}**{b}**'.replace('\n', ' ')]
      lines.append('')
  path = out / f'samples_{name}.md'
  workdir_lib.write_text(path, '\n'.join(lines) + '\n')
  return path


# ----------------------------------------------------------------------------------------------- results

def parameters(config, groups=('cell', 'decoder')) -> int:
  """Parameters of a method's networks: by default the RNN (cell and readout, the readout being the decoder);
  ('encoder', 'decoder') for the teacher."""
  shapes = jax.eval_shape(Networks.from_config(config).init, jax.random.PRNGKey(0))
  return int(sum(math.prod(a.shape) for k in groups for a in jax.tree.leaves(shapes[k])))


def _cell(values: list[float]) -> dict:
  st = stats.mean_ci(values)
  return {'mean': st['mean'], 'ci': st['ci'], 'per_seed': values}


def summarize_scores(scores: dict, multiple: int) -> dict:
  """{column: {'bits', 'bits_xK', 'bits_per_t_xK' (per seed)}} from {column: [per-seed score dicts]}."""
  out, k = {}, f'_x{multiple}' if multiple > 1 else ''
  for col, per_seed in scores.items():
    key = 'teacher' if col == 'teacher' else 'rnn_only'
    out[col] = {'bits': _cell([s[f'{key}_bits'] for s in per_seed]),
                f'bits{k}': _cell([s[f'{key}_bits{k}'] for s in per_seed]),
                f'bits_per_t{k}': [s[f'{key}_bits_per_t{k}'] for s in per_seed]}
  return out


def write_table(summary: dict, path) -> str:
  """Markdown: each column's held-out bits per token at T and at k*T (mean ± 95% interval over seeds), its
  steps and step time, and the drift-robust selection."""
  k, T = summary['test_multiple'], summary['seq_len']
  lines = [f'# {summary["name"]}: equal wall clock ({summary["budget_s"]:.0f} s of one CPU core per method)', '',
           f'Held-out bits per token (test split), the RNN reading whole sequences from its initial memory; the '
           f'teacher from its encoder\'s prefix memories. Seeds {", ".join(map(str, summary["seeds"]))}: mean ± '
           f'95% t-interval. SMT→DMT: DMT for {summary["dmt_share"]:.0%} of the budget. Parameters: the RNN\'s '
           '(cell and readout); the teacher\'s (encoder and decoder).', '',
           f'| method | bits/token at T={T} | at {k}T={k * T} | steps | s/step | parameters |',
           '|---|---|---|---|---|---|']
  for col in COLUMNS:
    r, info = summary['results'][col], summary['runs'][col]
    lines.append(f'| {NAMES[col]} | {stats.fmt(r["bits"]["mean"], r["bits"]["ci"])} | '
                 f'{stats.fmt(r[f"bits_x{k}"]["mean"], r[f"bits_x{k}"]["ci"])} | {info["steps"]} | '
                 f'{info["seconds_per_step"]:.3f} | {info["parameters"]:,} |')
  sel = summary['drift_selection']
  lines += ['', f'Drift-robust setting chosen on the validation split (seed {summary["seeds"][0]}, '
            f'{summary["select_share"]:.0%} of the budget): **{sel["chosen"]}** {sel["settings"][sel["chosen"]]}; '
            'validation bits per token: ' + ', '.join(f'{n} {v:.3f}' for n, v in sel['scores'].items()) + '.']
  text = '\n'.join(lines) + '\n'
  workdir_lib.write_text(path, text)
  return text


def _check(config, plan: Plan):
  """ConfigError before anything runs: the study needs parallel SMT (an RNN that starts from its initial
  memory) and a validation split to choose the drift-robust setting on."""
  if config.method != 'smt' or config.smt.mode != 'parallel':
    raise ConfigError("the real-data study needs config.method='smt' and config.smt.mode='parallel' (e.g. :cpu)")
  if config.data.valid_fraction <= 0 and config.data.name not in ('retrieval', 'copy', 'stack', 'keys_values',
                                                                  'modular', 'parity'):
    raise ConfigError('config.data.valid_fraction: must be > 0 (the drift-robust setting is chosen on it)')
  if plan.budget_s <= 0 or not 0 < plan.dmt_share < 1 or not 0 < plan.select_share <= 1 or not plan.seeds:
    raise ConfigError(f'bad plan: budget {plan.budget_s} s, dmt_share {plan.dmt_share}, '
                      f'select_share {plan.select_share}, seeds {plan.seeds}')
  for _, items in plan.drift_grid:
    validated = method_config(config, 'smt_drift', plan.seeds[0], dict(items))
    config_lib.validate(validated)


def run_study(config, plan: Plan, out, name: str = '') -> dict:
  """Calibrates, chooses the drift-robust setting, trains every method for every seed at equal wall clock,
  scores them and writes realdata_<name>.{json,md}, curves_<name>.png, positions_<name>.png, samples."""
  name = name or config.data.name
  out = workdir_lib.as_path(out)
  out.mkdir(parents=True, exist_ok=True)
  _check(config, plan)
  t0 = time.perf_counter()
  cal = calibrate(calibration_configs(config, plan), out)
  chosen, drift, sel_scores = select_drift(config, plan, out, cal)
  cal.update(calibrate_dmt(config, plan, out, out / 'select' / plan.drift_grid[0][0]))
  cal['smt_drift'] = cal[f'drift_{chosen}']
  jobs = {seed: seed_jobs(config, plan, out, seed, drift, cal) for seed in plan.seeds}
  run_jobs([j for per_seed in jobs.values() for j in per_seed.values()], plan.lanes)
  scores = {col: [] for col in COLUMNS}
  curves = {col: [] for col in COLUMNS}
  for per_seed in jobs.values():
    for m in METHODS:
      scores[m].append(score(per_seed[m].workdir, plan.test_multiple, plan.num_eval_batches))
    scores['teacher'].append(scores['smt'][-1])
    for col, c in method_curves(per_seed, cal).items():
      curves[col].append(c)
  first = jobs[plan.seeds[0]]
  summary = {
      'name': name, 'seq_len': config.data.seq_len, 'budget_s': plan.budget_s, 'seeds': list(plan.seeds),
      'dmt_share': plan.dmt_share, 'select_share': plan.select_share, 'test_multiple': plan.test_multiple,
      'calibration_s_per_step': cal, 'curves': curves,
      'drift_selection': {'chosen': chosen, 'settings': {n: dict(v) for n, v in plan.drift_grid},
                          'scores': sel_scores},
      'results': summarize_scores(scores, plan.test_multiple),
      'runs': {col: {'steps': first['smt' if col == 'teacher' else col].config.num_steps,
                     'seconds_per_step': cal['smt' if col == 'teacher' else col],
                     'parameters': parameters(first['smt' if col == 'teacher' else col].config,
                                              ('encoder', 'decoder') if col == 'teacher' else ('cell', 'decoder'))}
               for col in COLUMNS},
  }
  summary['runs']['smt_dmt']['steps'] = (f'{first["smt_start"].config.num_steps} SMT + '
                                         f'{first["smt_dmt"].config.num_steps} DMT')
  _write_outputs(summary, plan, out, name, {m: first[m].workdir for m in METHODS})
  summary['study_seconds'] = time.perf_counter() - t0
  workdir_lib.write_text(out / f'realdata_{name}.json', json.dumps(_finite(summary), indent=2))
  return summary


def _write_outputs(summary: dict, plan: Plan, out: epath.Path, name: str, workdirs: dict):
  write_table(summary, out / f'realdata_{name}.md')
  plotting.learning_curves(summary['curves'], out / f'curves_{name}.png', NAMES, title=f'{name}: held-out loss')
  k = plan.test_multiple
  per_t = {col: r[f'bits_per_t_x{k}' if k > 1 else 'bits_per_t'] for col, r in summary['results'].items()}
  plotting.loss_per_position(per_t, out / f'positions_{name}.png', NAMES, summary['seq_len'],
                             title=f'{name}: held-out loss by position ({k}T)')
  write_samples(workdirs, out, name)


def _finite(v):
  if isinstance(v, dict):
    return {k: _finite(x) for k, x in v.items()}
  if isinstance(v, (list, tuple)):
    return [_finite(x) for x in v]
  return None if isinstance(v, float) and not math.isfinite(v) else v
