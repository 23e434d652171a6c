"""Compression sweep: how test loss depends on memory size and training steps.

One SMT run per memory size Z = K * d (K = model.num_mem_tokens fixed, the token width d =
`model.mem_dim` swept), each evaluated `num_evals` times during training (`eval_every`), so a run gives a
whole row of the (memory size x steps) grid. The grid of any logged evaluation metric (default
`loss_dec_test`: the teacher's predictive loss, what a memory of that size lets the decoder reach;
`rnn_only_loss`: the RNN reading whole sequences from its initial memory) is written as
compression.json, a markdown table, and an iso-loss contour plot (steps on the x-axis, memory size on a
log2 y-axis). Runs go to OUT/Z<size>/ (OUT/Z<size>/seed<s>/ with several seeds, config.seed + 0..seeds-1;
the grid then holds the mean over seeds and `grids_ci` the 95% t-interval) and train through
`runner.run_jobs`: in this process, or `lanes` at a time, each in a process pinned to its own core; a rerun
resumes unfinished runs and reuses finished ones.
"""

from __future__ import annotations

from etils import epath

from smtjax import config as config_lib
from smtjax import plotting
from smtjax import workdir as workdir_lib
from smtjax.errors import ConfigError
from smtjax.metrics import read_metrics
from smtjax.studies import runner, stats
from smtjax.studies.runner import Job

DEFAULT_METRICS = ('loss_dec_test', 'loss_dec0_test', 'rnn_only_loss', 'rnn_only_accuracy', 'teacher_accuracy')


def sweep_config(config, mem_dim: int, num_steps: int | None = None, num_evals: int = 10):
  """`config` with memory token width `mem_dim` and `num_evals` evenly spaced evaluations."""
  c = config.copy_and_resolve_references()
  c.model.mem_dim = int(mem_dim)
  c.model.mem_size = None
  if num_steps:
    c.num_steps = int(num_steps)
  if not 1 <= num_evals <= c.num_steps:
    raise config_lib.ConfigError(f'num_evals must be in [1, num_steps={c.num_steps}], got {num_evals}')
  c.eval_every = max(1, c.num_steps // num_evals)
  c.checkpoint_every = c.eval_every
  c.log_every = min(c.log_every, c.eval_every)
  c.progress_bar = False
  return c


def read_evals(workdir: str) -> dict[int, dict]:
  """step -> the evaluation record (the lines of metrics.jsonl that hold *_test metrics)."""
  out = {}
  for r in read_metrics(workdir):
    if any(k.endswith('_test') for k in r):
      out[int(r['step'])] = r
  return out


def run_compression(config, mem_dims, out: str, num_steps: int | None = None, num_evals: int = 10,
                    metric: str = 'loss_dec_test', config_name: str = '', seeds: int = 1, lanes: int = 0) -> dict:
  """Trains one run per memory width and seed (or reuses finished ones), `lanes` at a time (0: one after another
  in this process), and writes OUT/compression.{json,md,png}.

  Returns {'config', 'num_mem_tokens', 'mem_dims', 'mem_sizes', 'steps', 'metric', 'seeds', 'grids': {metric:
  [[mean over seeds per step] per memory size]}, 'grids_ci': the 95% half-widths (None for one seed),
  'grids_per_seed': {metric: [[[value per step] per seed] per memory size]}}.
  """
  if not (metric.endswith('_test') or metric.startswith(('rnn_only_', 'teacher_'))):  # before any training
    raise ConfigError(f'metric {metric!r} is not logged at evaluation steps (expected a *_test, rnn_only_* or '
                     'teacher_* metric)')
  mem_dims = sorted(int(d) for d in mem_dims)
  if not mem_dims or mem_dims[0] < 1:
    raise config_lib.ConfigError(f'memory widths must be positive integers, got {mem_dims}')
  if int(seeds) < 1:
    raise ConfigError(f'seeds must be >= 1, got {seeds}')
  if int(lanes) < 0:
    raise ConfigError(f'lanes must be >= 0 (0: every run in this process), got {lanes}')
  seed_list = [int(config.seed) + i for i in range(int(seeds))]
  K = int(config.model.num_mem_tokens)
  jobs = {}
  for d in mem_dims:
    for seed in seed_list:
      c = sweep_config(config, d, num_steps, num_evals)
      c.seed = seed
      config_lib.validate(c)  # a ConfigError before any run writes its workdir
      workdir = epath.Path(out) / f'Z{K * d}'
      jobs[d, seed] = Job(workdir if seeds == 1 else workdir / f'seed{seed}', c)
  runner.run_jobs(list(jobs.values()), lanes)
  evals = {key: read_evals(str(job.workdir)) for key, job in jobs.items()}
  shared = set.intersection(*({s for s in evals[key] if s <= job.config.num_steps} for key, job in jobs.items()))
  steps = sorted(shared)
  rows = {d: [evals[d, seed] for seed in seed_list] for d in mem_dims}
  if not steps:
    raise ConfigError('the runs share no evaluation step')
  logged = rows[mem_dims[0]][0][steps[0]]
  metrics = list(dict.fromkeys([metric] + [m for m in DEFAULT_METRICS if m in logged]))
  if metric not in logged:
    raise ConfigError(f'metric {metric!r} is not logged; logged: {sorted(logged)}')
  per_seed = {m: [[[_finite(ev[s].get(m)) for s in steps] for ev in rows[d]] for d in mem_dims] for m in metrics}
  cells = {m: [[stats.mean_ci([run[i] for run in runs]) for i in range(len(steps))] for runs in per_seed[m]]
           for m in metrics}
  grids = {m: [[_finite(c['mean']) for c in row] for row in cells[m]] for m in metrics}
  grids_ci = {m: [[_finite(c['ci']) for c in row] for row in cells[m]] for m in metrics}
  result = {'config': config_name, 'task': config.data.name, 'num_mem_tokens': K, 'mem_dims': mem_dims,
            'mem_sizes': [K * d for d in mem_dims], 'steps': steps, 'metric': metric, 'seeds': seed_list,
            'grids': grids, 'grids_ci': grids_ci, 'grids_per_seed': per_seed}
  out = epath.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  workdir_lib.write_json(out / 'compression.json', result)
  write_table(result, out / 'compression.md')
  plotting.compression_contours(result, out / 'compression.png')
  return result


def _finite(v):
  return None if v is None else workdir_lib.json_safe(float(v))


def write_table(result: dict, path: str) -> str:
  """Markdown grid of result['metric']: mean (± 95% interval with several seeds) per memory size and step."""
  m = result['metric']
  seeds = result.get('seeds', [0])
  cis = result.get('grids_ci', {}).get(m) or [[None] * len(result['steps'])] * len(result['mem_sizes'])
  lines = [f'# Compression sweep: {result["config"] or result["task"]}, {m}', '',
           f'Rows: memory size Z = K x d (K = {result["num_mem_tokens"]}); columns: training steps. Seeds '
           f'{", ".join(map(str, seeds))}' + (' (mean ± 95% t-interval).' if len(seeds) > 1 else '.'), '']
  lines += stats.table(['Z'] + result['steps'], [[z] + [stats.fmt(v, c) for v, c in zip(row, ci)]
                                                  for z, row, ci in zip(result['mem_sizes'], result['grids'][m], cis)])
  return stats.write_markdown(path, lines)
