"""Where SMT's teacher spends its steps: arms (a config's changes) x seeds at equal steps, through the studies'
runner (`runner.run_jobs`), each run scored by its held-out learning curve.

An arm is a name and `key=value` overrides of a base config (`variants.override`), e.g.
`Arm('dec4', (('smt.num_decoder_samples', 4),))`, or `method=transformer` for the plain-Transformer reference
(the teacher without its memory bottleneck). Every run is evaluated `evals` times on the validation split and
reports, per arm over seeds: the final teacher accuracy (the reference's own accuracy for the Transformer),
the RNN's accuracy from its initial memory and how far it still swings over the last quarter, the steps to
reach 95% of the run's final accuracy, the change over the last quarter as the claims study measures it
(`claims.last_quarter_change`; a plateau when below 0.01), and the seconds it trained.

A curriculum over T (short sequences first) is an arm with `short_len` and `short_steps`: each seed first trains
`short_steps` steps on sequences of length `short_len` (the sparse target's future shortened to fit), then the
rest of the steps at the full length starting from those parameters (`config.init_from`: a fresh optimizer and
schedule). The arm is judged on its full-length evaluations, at its total step count, and its seconds are both
stages'.

Summaries are built from run records (smtjax/studies/ledger.py): with a ledger file every finished run is
recorded there (named <task>/T<T>/<arm>/seed<s>), runs it holds are not trained again, and `report=True`
rebuilds the table and figure from it alone.
"""

from __future__ import annotations

import dataclasses

from etils import epath

from smtjax import config as config_lib
from smtjax import plotting, variants
from smtjax import workdir as workdir_lib
from smtjax.errors import ConfigError
from smtjax.studies import claims, stats
from smtjax.studies import ledger as ledger_lib
from smtjax.studies.runner import Job, run_jobs, with_steps

PLATEAU = 0.01  # a run has plateaued when its accuracy changed by less than this over its last quarter


@dataclasses.dataclass(frozen=True)
class Arm:
  """One row of the study: the base config with `overrides` ((field, value), ...)."""
  name: str
  overrides: tuple[tuple[str, object], ...] = ()
  short_len: int = 0  # a curriculum: first `short_steps` steps on sequences of this length (0: none)
  short_steps: int = 0


CURRICULUM_KEYS = ('short_len', 'short_steps')  # an arm's own keys, not config fields


def parse_arm(text: str) -> Arm:
  """'name' (no change) or 'name:field=value,field=value' -> Arm: the key=value parts of a config variant
  (`variants.build`), values parsed by `variants.parse_value`; `short_len=L,short_steps=S` set a curriculum."""
  name, _, rest = text.partition(':')
  pairs, curriculum = [], {}
  for part in filter(None, (p.strip() for p in rest.split(','))):
    field, sep, value = part.partition('=')
    if not sep:
      raise ConfigError(f'arm {text!r}: expected field=value, got {part!r}')
    if field.strip() in CURRICULUM_KEYS:
      curriculum[field.strip()] = variants.parse_value(value.strip())
    else:
      pairs.append((field.strip(), variants.parse_value(value.strip())))
  return Arm(name.strip(), tuple(pairs), **curriculum)


def arm_config(config, arm: Arm, seed: int, steps: int, evals: int):
  """One run's config: the base with the arm's overrides, the seed, `steps` steps evaluated `evals` times on
  the validation split, no progress bar."""
  c = config.copy_and_resolve_references()
  for field, value in arm.overrides:
    variants.override(c, field, value)
  c.seed, c.progress_bar, c.metrics_flush_secs, c.eval_split = int(seed), False, 0.0, 'valid'
  c = with_steps(c, steps, evals)
  config_lib.validate(c)
  return c


def short_config(config, arm: Arm, seed: int, steps: int, evals: int):
  """A curriculum's first stage (`config.stages`' first at `arm.short_len`, `arm.short_steps`) with the arm's
  settings, its evaluations as dense as the full run's."""
  if not (isinstance(arm.short_len, int) and isinstance(arm.short_steps, int) and arm.short_len > 0
          and 0 < arm.short_steps < steps):
    raise ConfigError(f'arm {arm.name!r}: short_len must be > 0 and short_steps in 1..{steps - 1}, got '
                      f'{arm.short_len} and {arm.short_steps}')
  c = config.copy_and_resolve_references()
  c.curriculum.length, c.curriculum.steps = arm.short_len, arm.short_steps
  try:
    (first, _), _ = config_lib.stages(c, '')
  except ConfigError as e:
    raise ConfigError(f'arm {arm.name!r}: short_len={arm.short_len}: {e}') from None
  return arm_config(first, dataclasses.replace(arm, short_len=0, short_steps=0), seed, arm.short_steps,
                    max(1, round(evals * arm.short_steps / steps)))


def plan_jobs(config, arms: list[Arm], seeds: list[int], steps: int, evals: int,
              out) -> dict[tuple[str, int], tuple[Job, ...]]:
  """Every (arm, seed) run as its Jobs under out/<arm>/seed<seed> (a curriculum: seed<seed>_short first, then
  the full length from its parameters); every config validated before any training."""
  names = [a.name for a in arms]
  if len(set(names)) != len(names):
    raise ConfigError(f'arm names must be unique, got {names}')
  out = epath.Path(out)
  jobs = {}
  for a in arms:
    for s in seeds:
      workdir = out / a.name / f'seed{s}'
      if not a.short_len and not a.short_steps:
        jobs[(a.name, s)] = (Job(workdir, arm_config(config, a, s, steps, evals)),)
        continue
      first = Job(out / a.name / f'seed{s}_short', short_config(config, a, s, steps, evals))
      rest = steps - a.short_steps
      c = arm_config(config, a, s, rest, max(1, round(evals * rest / steps)))
      c.init_from = str(first.workdir)
      jobs[(a.name, s)] = (first, Job(workdir, c, after=(first.workdir,)))
  return jobs


def accuracy_key(config) -> str:
  """The metric a run's model is judged by: the Transformer reference's own accuracy, else the teacher's where
  its evaluation scores one (a causal teacher), else the RNN's (a window-mode teacher has no prefix memories)."""
  if config.method == 'transformer':
    return 'transformer_accuracy'
  return 'teacher_accuracy' if config_lib.scores_teacher(config) else 'rnn_only_accuracy'


def run_curve(stages: tuple[Job, ...], records: dict) -> dict:
  """A finished run's evaluations at full length (its last stage's, counted in the steps of every stage):
  steps, the model's accuracy (`accuracy_key`) and the RNN's (NaN for the Transformer reference), and what
  they say (final, steps to 95% of final, last-quarter change, seconds of every stage)."""
  *earlier, last = stages
  offset = sum(int(j.config.num_steps) for j in earlier)
  rec = records[str(last.workdir)]
  model = ledger_lib.curve(rec, accuracy_key(last.config), offset)
  steps, acc = [int(x) for x in model['steps']], [float(v) for v in model['values']]
  rnn = ledger_lib.curve(rec, 'rnn_only_accuracy')['values'] or [float('nan')] * len(steps)
  change = claims.last_quarter_change({'steps': steps, 'values': acc})
  return dict(steps=steps, accuracy=acc, rnn_accuracy=rnn, final=acc[-1], rnn_final=rnn[-1],
              steps_to_95=steps_to_fraction(steps, acc, 0.95), change=change,
              rnn_swing=last_quarter_swing(steps, rnn), seconds=sum(records[str(j.workdir)]['seconds'] for j in stages))


def steps_to_fraction(steps: list[int], values: list[float], fraction: float) -> int:
  """The first evaluated step whose value reaches `fraction` of the final value."""
  target = fraction * values[-1]
  return next(s for s, v in zip(steps, values) if v >= target)


def last_quarter_swing(steps: list[int], values: list[float]) -> float:
  """max - min of the values evaluated at or after 3/4 of the run: how far a curve still moves at its end (an
  RNN whose accuracy jumps between evaluations has not settled, whatever its last value)."""
  tail = [v for s, v in zip(steps, values) if s >= 0.75 * steps[-1]]
  return max(tail) - min(tail)


def summarize(jobs: dict[tuple[str, int], tuple[Job, ...]], records: dict) -> dict:
  """{arm: {'runs': {seed: run_curve}, and per metric the mean, 95% interval and per-seed values}}; a run without
  records (a report from a ledger that lacks it) is left out, and an arm without any."""
  out: dict = {}
  for (arm, seed), stages in jobs.items():
    if all(records.get(str(j.workdir)) is not None for j in stages):
      out.setdefault(arm, {'runs': {}})['runs'][seed] = run_curve(stages, records)
  for r in out.values():
    per_seed = list(r['runs'].values())
    for k in ('final', 'rnn_final', 'steps_to_95', 'change', 'rnn_swing', 'seconds'):
      values = [float(p[k]) for p in per_seed]
      r[k] = dict(stats.mean_ci(values), per_seed=values)
    r['plateaued'] = sum(abs(p['change']) < PLATEAU for p in per_seed)
    r['num_seeds'] = len(per_seed)
  return out


def write_table(summary: dict, path, title: str, steps: int) -> str:
  """The summary as a markdown table (mean ± 95% interval over seeds, then the per-seed values)."""
  head = ['arm', 'final accuracy', 'RNN-only accuracy', 'RNN swing', 'steps to 95%', 'plateaued', 'seconds',
          'per seed (final / RNN)']
  rows = []
  for arm, r in summary.items():
    rows.append([arm, stats.fmt(r['final']['mean'], r['final']['ci']),
                 stats.fmt(r['rnn_final']['mean'], r['rnn_final']['ci']), stats.fmt(r['rnn_swing']['mean']),
                 stats.fmt(r['steps_to_95']['mean'], r['steps_to_95']['ci'], 0),
                 f"{r['plateaued']}/{r['num_seeds']}", stats.fmt(r['seconds']['mean'], None, 0),
                 ', '.join(f'{a:.2f} / {b:.2f}' for a, b in zip(r['final']['per_seed'], r['rnn_final']['per_seed']))])
  lines = [f'# {title}', '', f'{steps} steps per run; accuracy on the validation split, mean ± 95% interval over '
           f'seeds; final = last evaluation of the teacher (of the plain Transformer; of the RNN where a window-mode '
           f'teacher has no prefix memories to score); RNN swing = max - min of the RNN-only accuracy over the last '
           f'quarter (mean over seeds); steps to 95% = first evaluation at 95% of the final accuracy; plateaued = '
           f'seeds whose accuracy changed by less than {PLATEAU} over the last quarter (least-squares trend, as in the '
           f'claims study).', '', *stats.table(head, rows)]
  return stats.write_markdown(path, lines)


def run_study(config, arms: list[Arm], seeds: list[int], steps: int, evals: int, out, lanes: int,
              title: str, ledger: str | None = None, report: bool = False) -> dict:
  """Trains every (arm, seed) not yet finished under `out` nor held by the `ledger` file (recording each
  finished run there; `report`: trains nothing), then writes recipe.json, .md and .png there."""
  out = epath.Path(out)
  jobs = plan_jobs(config, arms, seeds, steps, evals, out)
  flat = [dataclasses.replace(j, name=f'{config.data.name}/T{j.config.data.seq_len}/{j.workdir.relative_to(out)}')
          for stages in jobs.values() for j in stages]
  records = run_jobs(flat, lanes, ledger_lib.Ledger(ledger), train_missing=not report)
  out.mkdir(parents=True, exist_ok=True)
  summary = summarize(jobs, records)
  workdir_lib.write_json(out / 'recipe.json', summary)
  write_table(summary, out / 'recipe.md', title, steps)
  plotting.recipe_curves(summary, out / 'recipe.png', title)
  return summary

