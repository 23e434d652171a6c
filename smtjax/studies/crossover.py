"""Where SMT overtakes BPTT: SMT, SMT->DMT and tuned BPTT against sequence length, at equal wall clock.

For every task config and every length T, the three methods train for the same wall clock
(smtjax/studies/wallclock.py) and are scored by their RNN's held-out accuracy reading whole sequences from its
initial memory, 3 seeds by default. Each method is first tuned, once per task at `tune_at` (default: the
middle length), on the validation split, and keeps its choice at every length:

- SMT: its learning rate and its drift-robust setting (none, 4 rolled steps, matched memory noise);
- SMT->DMT: the learning rate of its SMT stage (DMT runs at a third of it);
- BPTT: its learning rate and its cell (the Transformer updater or a GRU of the same memory).

Writes, in `out`: `crossover.{json,md}` (accuracy against T per task, the chosen settings, and the crossover:
the shortest T from which on SMT or SMT->DMT beats tuned BPTT at every longer T, a win being a per-seed
accuracy difference whose 95% interval lies above zero, or "none up to T=max") and
`crossover_<task>.png` (accuracy against T with 95% intervals).
"""

from __future__ import annotations

import math

from smtjax import plotting
from smtjax import workdir as workdir_lib
from smtjax.studies import compare, stats, wallclock
from smtjax.studies.wallclock import Method, Plan  # noqa: F401  (the study's plan, re-exported)

NAMES = {'teacher': 'Transformer teacher (SMT run)', 'smt': 'SMT', 'smt_dmt': 'SMT→DMT', 'bptt': 'BPTT (tuned)'}
DRIFT = {'plain': (), 'roll4': (('smt.rollout_steps', 4),),
         'noise1': (('smt.memory_noise', 1.0), ('smt.memory_noise_mode', 'matched'))}


def methods(smt_lrs=(1e-3, 3e-3), bptt_lrs=(3e-4, 1e-3, 3e-3), cells=('transformer', 'gru')) -> tuple[Method, ...]:
  """SMT, SMT->DMT and BPTT with their candidate settings (module docstring)."""
  lr = lambda v: (('optim.lr', v),)
  return (
      Method('smt', NAMES['smt'], 'smt', grid=tuple((f'lr{v:g}_{d}', lr(v) + s) for v in smt_lrs
                                                      for d, s in DRIFT.items())),
      Method('smt_dmt', NAMES['smt_dmt'], 'smt_dmt', grid=tuple((f'lr{v:g}', lr(v)) for v in smt_lrs)),
      Method('bptt', NAMES['bptt'], 'bptt', grid=tuple((f'{cell}_lr{v:g}', (('model.cell', cell),) + lr(v))
                                                        for cell in cells for v in bptt_lrs)),
  )


def run_crossover(configs: dict, lengths, plan: Plan, out, tune_at: int | None = None,
                  study_methods: tuple[Method, ...] | None = None) -> dict:
  """`configs`: {task: base config (parallel SMT)}; `lengths`: T (keys_values: numbers of pairs). Tunes each
  method at `tune_at`, then runs every length; writes out/crossover.{json,md} and out/crossover_<task>.png."""
  out = workdir_lib.as_path(out)
  out.mkdir(parents=True, exist_ok=True)
  lengths = [int(x) for x in lengths]
  tune_at = int(tune_at or lengths[len(lengths) // 2])
  result, base = {}, study_methods or methods()
  for config in configs.values():  # every config of every length checked before anything trains
    for L in sorted({*lengths, tune_at}):
      wallclock.check(compare.at_length(config, L), base, plan)
  for task, config in configs.items():
    chosen, selection = wallclock.tune(compare.at_length(config, tune_at), base, plan, out / task / f'tune_T{tune_at}')
    runs = {}
    for L in lengths:
      runs[str(L)] = wallclock.run_study(compare.at_length(config, L), wallclock.fixed(base, chosen), plan,
                                         out / task / f'T{L}', teacher_of='smt')
    result[task] = {'tune_at': tune_at, 'selection': selection, 'lengths': lengths, 'runs': runs,
                    'crossover': crossover_length(runs, lengths)}
    workdir_lib.write_json(out / 'crossover.json', result)
    plotting.accuracy_by_length(task, result[task], out / f'crossover_{task}.png', NAMES)
  write_table(result, out / 'crossover.md')
  return result


def _acc(run: dict, col: str) -> float:
  return run['results'][col]['accuracy']['mean']


def beats(run: dict, col: str, other: str = 'bptt') -> bool:
  """`col` is more accurate than `other`: the 95% t-interval of their per-seed accuracy differences (seeds
  paired) lies above zero; with one seed, a higher accuracy. Methods that all sit at chance do not beat each
  other by noise."""
  a, b = (run['results'][c]['accuracy']['per_seed'] for c in (col, other))
  d = stats.mean_ci([x - y for x, y in zip(a, b, strict=True)])
  return d['mean'] > (d['ci'] if math.isfinite(d['ci']) else 0.0)


def crossover_length(runs: dict, lengths) -> int | None:
  """The shortest T from which on SMT or SMT->DMT beats BPTT (`beats`) at every T >= it."""
  wins = [beats(runs[str(L)], 'smt') or beats(runs[str(L)], 'smt_dmt') for L in lengths]
  for i in range(len(lengths)):
    if all(wins[i:]):
      return lengths[i]
  return None


def write_table(result: dict, path) -> str:
  lines = ['# SMT, SMT→DMT and tuned BPTT against sequence length, at equal wall clock', '']
  for task, r in result.items():
    first = r['runs'][str(r['lengths'][0])]
    cols = list(first['results'])
    lines += [f'## {task}', '', f'Held-out accuracy of the RNN reading whole sequences from its initial memory; '
              f'{first["budget_s"]:.0f} s of one CPU core per run; seeds {", ".join(map(str, first["seeds"]))}: '
              'mean ± 95% t-interval. Crossover: '
              + (f'T = {r["crossover"]}' if r['crossover'] else f'none up to T = {r["lengths"][-1]}')
              + ' (the shortest T from which on SMT or SMT→DMT beats BPTT at every length: per-seed accuracy '
              'differences with a 95% interval above zero).', '']
    rows = []
    for L in r['lengths']:
      run = r['runs'][str(L)]
      cells = [stats.fmt(run['results'][c]['accuracy']['mean'], run['results'][c]['accuracy']['ci']) for c in cols]
      steps = ' / '.join(str(run['runs'][m]['steps']) for m in ('smt', 'smt_dmt', 'bptt'))
      rows.append([run['seq_len']] + cells + [steps])
    lines += stats.table(['T'] + [NAMES.get(c, c) for c in cols] + ['steps SMT / DMT / BPTT'], rows)
    lines.append('')
    for m, sel in r['selection'].items():
      lines.append(f'- {NAMES.get(m, m)}: chosen **{sel["chosen"]}** at T={r["tune_at"]} on the validation split '
                   f'({sel["by"]}: ' + ', '.join(f'{n} {v:.3f}' for n, v in sel['scores'].items()) + ')')
    lines.append('')
  return stats.write_markdown(path, lines)
