"""The teacher's ceiling: where SMT's RNN stays under its Transformer teacher, which knob closes the gap and at
what cost.

For one task config, every value of every knob is an SMT run of the config's steps (3 seeds by default),
scored on the held-out test split by the teacher (the decoder from the encoder's prefix memory) and by the
RNN reading whole sequences from its initial memory; its cost is its step time on one core (calibrated). The
steps knob comes from the base config's own learning curve. Knobs (config overrides): the memory's number of
tokens K and their width (d_model), the dynamics loss's weight coef_dyn, and the number of steps; a knob
value's runs are `RunKey(knob, candidate=value)`.
Writes `ceiling_<task>.{json,md,png}`: teacher and RNN accuracy, their gap, and seconds per step per value.
"""

from __future__ import annotations

import numpy as np

from smtjax import plotting
from smtjax import workdir as workdir_lib
from smtjax.studies import runner, stats, wallclock
from smtjax.studies.runner import Job, RunKey

KNOBS = {
    'memory tokens K': tuple((f'K={k}', (('model.num_mem_tokens', k),)) for k in (1, 2, 4, 8)),
    'memory width d': tuple((f'd={d}', (('model.d_model', d), ('model.num_heads', max(1, d // 16))))
                            for d in (16, 32, 64)),
    'coef_dyn': tuple((f'{w:g}', (('smt.coef_dyn', w),)) for w in (0.03, 0.1, 0.3, 1.0)),
}


def _config(config, overrides, seed: int, evals: int):
  c = wallclock.method_config(config, wallclock.Method('smt', 'SMT', 'smt', tuple(overrides)), seed)
  return runner.with_steps(c, config.num_steps, evals)


def run_ceiling(config, out, seeds=(0, 1, 2), knobs: dict | None = None, lanes: int = 2, evals: int = 8,
                num_eval_batches: int = 8, name: str = '') -> dict:
  """Trains and scores every knob value for every seed (module docstring); returns and writes the summary."""
  name, knobs = name or config.data.name, knobs or KNOBS
  out = workdir_lib.as_path(out)
  out.mkdir(parents=True, exist_ok=True)
  values = {RunKey(knob, candidate=label): overrides for knob, vals in knobs.items() for label, overrides in vals}
  cal = wallclock.calibrate({key: _config(config, ov, seeds[0], evals) for key, ov in values.items()}, out,
                            lanes=lanes)
  jobs = {(key, s): Job(out / _slug(key.method) / key.candidate / f'seed{s}', _config(config, ov, s, evals))
          for key, ov in values.items() for s in seeds}
  runner.run_jobs(list(jobs.values()), lanes)
  rows = {}
  for key in values:
    scores = [runner.score(jobs[key, s].workdir, (), num_eval_batches) for s in seeds]
    teacher = stats.mean_ci([r['teacher_accuracy'] for r in scores])
    rnn = stats.mean_ci([r['rnn_only_accuracy'] for r in scores])
    gap = stats.mean_ci([r['teacher_accuracy'] - r['rnn_only_accuracy'] for r in scores])
    rows.setdefault(key.method, []).append({'value': key.candidate, 'teacher': teacher, 'rnn': rnn, 'gap': gap,
                                            'seconds_per_step': cal[key]})
  summary = {'task': name, 'steps': config.num_steps, 'seeds': list(seeds), 'knobs': rows,
             'steps_curve': _steps_curve(config, jobs, knobs, seeds)}
  workdir_lib.write_json(out / f'ceiling_{name}.json', summary)
  write_table(summary, out / f'ceiling_{name}.md')
  plotting.ceiling_curves(summary, out / f'ceiling_{name}.png')
  return summary


def _slug(knob: str) -> str:
  return knob.replace(' ', '_')


def _steps_curve(config, jobs, knobs, seeds) -> list[dict]:
  """Teacher and RNN held-out accuracy against steps, from the runs of the knob value equal to the base config
  (the first knob's value matching config.model.num_mem_tokens), mean over seeds."""
  k = next(iter(knobs))
  lab = next((lab for lab, ov in knobs[k] if dict(ov).get('model.num_mem_tokens') == config.model.num_mem_tokens),
             knobs[k][0][0])
  curves = [wallclock.curve(jobs[RunKey(k, candidate=lab), s].workdir, 1.0) for s in seeds]
  n = min(len(c['seconds']) for c in curves)
  return [{'step': int(curves[0]['seconds'][i]),
           'teacher': float(np.mean([c['teacher_accuracy'][i] for c in curves])),
           'rnn': float(np.mean([c['rnn_only_accuracy'][i] for c in curves]))} for i in range(n)]


def write_table(summary: dict, path) -> str:
  lines = [f'# {summary["task"]}: the teacher\'s ceiling', '',
           f'SMT runs of {summary["steps"]} steps; held-out accuracy of the teacher (decoder from the prefix memory) '
           f'and of the RNN reading whole sequences from its initial memory; seeds '
           f'{", ".join(map(str, summary["seeds"]))}: mean ± 95% t-interval; cost: seconds per step on one CPU core.']
  for knob, rows in summary['knobs'].items():
    lines += ['', f'## {knob}', ''] + stats.table(
        ['value', 'teacher', 'RNN', 'gap (teacher - RNN)', 's/step'],
        [[r['value']] + [stats.fmt(r[k]['mean'], r[k]['ci']) for k in ('teacher', 'rnn', 'gap')]
         + [f'{r["seconds_per_step"]:.4f}'] for r in rows])
  lines += ['', '## steps (the base config\'s learning curve, mean over seeds)', ''] + stats.table(
      ['step', 'teacher', 'RNN', 'gap'], [[p['step'], f'{p["teacher"]:.3f}', f'{p["rnn"]:.3f}',
                                          f'{p["teacher"] - p["rnn"]:.3f}'] for p in summary['steps_curve']])
  return stats.write_markdown(path, lines)
