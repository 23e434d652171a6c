"""SMT's nonlinear RNNs against time-parallel linear RNNs, at equal wall clock, on state-tracking tasks.

SMT exists to train nonlinear RNNs time-parallel; the obvious alternative is a linear recurrence trained
time-parallel by a parallel scan (minGRU, Feng et al. 2024; LRU, Orvieto et al. 2023), which cannot track
state that needs a nonlinear update (Merrill, Petty and Sabharwal 2024): parity, modular counting, stacks.
For each task config, every method below gets the same wall clock (smtjax/studies/wallclock.py), 3 seeds by
default, and is scored by its accuracy reading held-out sequences from its initial memory at the training
length T and at 2T and 4T:

- SMT (the drift-robust setting chosen on the validation split) and SMT->DMT, with the Transformer cell and
  with the GRU;
- BPTT with the GRU and with the LSTM (nonlinear, sequential);
- BPTT by parallel scan with minGRU and with the LRU (linear, time-parallel).

Writes `linear_rnns.{json,md}` (accuracy at T, 2T, 4T, mean ± 95% interval; seconds per step) and
`linear_rnns.png` (accuracy against wall clock, one panel per task).
"""

from __future__ import annotations

from smtjax import plotting
from smtjax import workdir as workdir_lib
from smtjax.studies import stats, wallclock
from smtjax.studies.wallclock import Method, Plan  # noqa: F401  (the study's plan, re-exported)

GRU, LSTM = (('model.cell', 'gru'),), (('model.cell', 'lstm'),)
MINGRU = (('model.cell', 'mingru'), ('bptt.parallel_scan', True))
LRU = (('model.cell', 'lru'), ('bptt.parallel_scan', True))
METHODS = (
    Method('smt', 'SMT, Transformer cell', 'smt', drift=True),
    Method('smt_dmt', 'SMT→DMT, Transformer cell', 'smt_dmt'),
    Method('smt_gru', 'SMT, GRU', 'smt', GRU, drift=True),
    Method('smt_dmt_gru', 'SMT→DMT, GRU', 'smt_dmt', GRU),
    Method('bptt_gru', 'BPTT, GRU', 'bptt', GRU),
    Method('bptt_lstm', 'BPTT, LSTM', 'bptt', LSTM),
    Method('scan_mingru', 'parallel-scan BPTT, minGRU', 'bptt', MINGRU),
    Method('scan_lru', 'parallel-scan BPTT, LRU', 'bptt', LRU),
)
NAMES = {'teacher': 'Transformer teacher', **{m.name: m.label for m in METHODS}}


def run_comparison(configs: dict, plan: Plan, out, methods: tuple[Method, ...] = METHODS) -> dict:
  """`configs`: {task name: base config (parallel SMT)}. Runs wallclock.run_study per task in out/<task>;
  writes out/linear_rnns.{json,md,png}; returns {task: summary}."""
  out = workdir_lib.as_path(out)
  out.mkdir(parents=True, exist_ok=True)
  summaries = {}
  for task, config in configs.items():
    teacher = next((m.name for m in methods if m.kind != 'bptt' and not m.overrides), None)
    summaries[task] = wallclock.run_study(config, methods, plan, out / task, teacher_of=teacher)
    workdir_lib.write_json(out / 'linear_rnns.json', summaries)
  write_table(summaries, out / 'linear_rnns.md')
  plotting.accuracy_over_time(summaries, out / 'linear_rnns.png', NAMES)
  return summaries


def write_table(summaries: dict, path) -> str:
  """Markdown: one table per task, a row per method: accuracy at T and at each k*T, seconds per step."""
  lines = ['# Nonlinear RNNs trained by SMT against linear RNNs trained by parallel scan, at equal wall clock', '']
  for task, s in summaries.items():
    ks, T = s['test_multiples'], s['seq_len']
    lines += [f'## {task} (T={T}; {s["budget_s"]:.0f} s of one CPU core per method; seeds '
              f'{", ".join(map(str, s["seeds"]))}: mean ± 95% t-interval)', '']
    rows = []
    for col, r in s['results'].items():
      cells = [stats.fmt(r[f'accuracy{x}']['mean'], r[f'accuracy{x}']['ci']) for x in [''] + [f'_x{k}' for k in ks]]
      info = s['runs'].get(col)
      tail = [f'{info["seconds_per_step"]:.4f}', f'{info.get("budget_ratio", float("nan")):.2f}',
              f'{info["parameters"]:,}'] if info else ['-', '-', '-']
      rows.append([NAMES.get(col, col)] + cells + tail)
    lines += stats.table(['method', f'accuracy at T={T}'] + [f'at {k}T' for k in ks]
                         + ['s/step', 'measured s / budget', 'parameters'], rows)
    for name, sel in s['selection'].items():
      lines.append(f'\nSetting of {NAMES[name]} chosen on the validation split: {sel["chosen"]} '
                   f'(validation {sel["by"]}: {", ".join(f"{n} {v:.3f}" for n, v in sel["scores"].items())}).')
    lines.append('')
  return stats.write_markdown(path, lines)
