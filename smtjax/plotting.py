"""Figures and images: the writers every figure goes through, most studies' figures, and shared helpers.

- Writers: `save_figure` (a Figure, format from the path's suffix) and `write_png` (a uint8 array: the image
  grids of smtjax.data.visualize).
- Figures: `loss_by_position` (runs.evaluate_workdir), `gradients` and `drift` (studies.analysis), `comparison`
  (studies.compare), `claims_curves` and `tuning_curves` (studies.claims), `recipe_curves` (studies.recipe),
  `learning_curves` and `loss_per_position` (studies.realdata), `accuracy_by_length` (studies.crossover),
  `accuracy_over_time` (studies.linear_rnns), `ceiling_curves` (studies.ceiling), `compression_contours`
  (studies.compression), `memory_space` (studies.geometry).
- Helpers: `clipped_error_bars` and `mean_over_seeds`.

Figures are `matplotlib.figure.Figure` objects, never pyplot state: nothing here switches matplotlib's
backend or keeps a figure alive, so these functions are safe to call from a notebook (which keeps its own
backend) and from threads. Images are encoded by Pillow. Every file is rendered in memory and written whole
through etils.epath, so `path` may be local or on an object store (gs://...); each function that writes one
returns its path.
"""

from __future__ import annotations

import io
import math
import textwrap

import numpy as np
from etils import epath
from matplotlib import colormaps
from matplotlib.figure import Figure
from PIL import Image


def _write(path, data: bytes) -> epath.Path:
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(data)
  return path


def save_figure(fig: Figure, path) -> epath.Path:
  """Renders `fig` in memory (format from the suffix) and writes it whole: local paths and gs:// alike."""
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format=epath.Path(path).suffix[1:] or 'png')
  return _write(path, buf.getvalue())


def write_png(path, rgb) -> epath.Path:
  """Writes uint8 [H, W, 3] (or [H, W] gray) as a PNG."""
  a = np.asarray(rgb, np.uint8)
  if a.ndim == 2:
    a = np.repeat(a[..., None], 3, axis=2)
  buf = io.BytesIO()
  Image.fromarray(a, 'RGB').save(buf, format='PNG')
  return _write(path, buf.getvalue())


def _positive(values) -> np.ndarray:
  """Values for a log axis: None, zeros and negatives become NaN (not drawn)."""
  return np.array([np.nan if u is None or u <= 0 else u for u in values], np.float64)


def _log_axes(ax, xlabel: str, ylabel: str, title: str):
  ax.set_yscale('log')
  ax.xaxis.get_major_locator().set_params(integer=True)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  if title:
    ax.set_title(title)
  ax.legend(fontsize=8)


def _marker(n: int):
  return '.' if n <= 64 else None


def loss_by_position(result: dict, path, title: str = '') -> epath.Path:
  """eval.json's RNN loss vs rollout position, the teacher's loss on the same targets as a line."""
  ys = np.array([np.nan if v is None else v for v in result['rnn_loss_per_position']], np.float64)
  fig = Figure(figsize=(6, 3.5), dpi=100)
  ax = fig.subplots()
  ax.plot(np.arange(len(ys)), ys, marker=_marker(len(ys)), label='RNN (read)')
  for key, style, label in (('teacher_loss_read_targets', '--', 'teacher, same targets'),
                            ('teacher_loss', ':', 'teacher, all targets')):
    v = result.get(key)
    if v is not None and math.isfinite(v):
      ax.axhline(v, linestyle=style, color='k' if style == '--' else 'gray', label=f'{label} ({v:.3f})')
  ax.set_xlabel(f'rollout position j (RNN steps after reading {result["read_len"]} tokens)')
  ax.set_ylabel('cross-entropy (nats)')
  if title:
    ax.set_title(title)
  ax.legend(fontsize=8)
  return save_figure(fig, path)


def gradients(curves: dict, path, title: str = '') -> epath.Path:
  """curves: label -> per-distance gradient norms; log-scale y (zeros and None are not drawn)."""
  fig = Figure(figsize=(6, 3.5), dpi=100)
  ax = fig.subplots()
  for label, v in curves.items():
    v = _positive(v)
    ax.plot(np.arange(len(v)), v, marker=_marker(len(v)), label=label)
  _log_axes(ax, 'distance to the target, T-1-t', 'mean gradient norm', title)
  return save_figure(fig, path)


def drift(runs: dict, path, title: str = '') -> epath.Path:
  """runs: label -> drift result ({'n', 'one_step_mse', 'rollout_mse'}); both errors against n, log y."""
  fig = Figure(figsize=(6, 3.5), dpi=100)
  ax = fig.subplots()
  for i, (label, r) in enumerate(runs.items()):
    for key, style, what in (('one_step_mse', '--', 'one-step'), ('rollout_mse', '-', 'rollout')):
      v = _positive(r[key])
      ax.plot(r['n'], v, style, color=f'C{i}', marker=_marker(len(v)), label=f'{label}: {what}')
  _log_axes(ax, 'RNN steps n after the teacher read the prefix', 'MSE to the teacher memory', title)
  return save_figure(fig, path)


def clipped_error_bars(ys, ci, lo: float, hi: float):
  """Error bars [below, above] for values ys +- ci, drawn only inside the range a value can take [lo, hi]
  (a t-interval over 3 seeds can pass 1 for an accuracy); None where no cell has an interval."""
  if all(c != c for c in ci):
    return None
  below = [0.0 if c != c or y != y else min(c, y - lo) for y, c in zip(ys, ci)]
  above = [0.0 if c != c or y != y else min(c, hi - y) for y, c in zip(ys, ci)]
  return [below, above]


def comparison(summary: dict, path, columns, names: dict) -> epath.Path:
  """Accuracy and loss against length (log2 x-axis), one line per method in `columns` (labels `names`);
  error bars where the cells hold `<key>_ci` (95% intervals over seeds)."""
  lengths = summary['lengths']
  fig = Figure(figsize=(10, 4), dpi=100)
  axes = fig.subplots(1, 2)
  nan = lambda v: float('nan') if v is None else float(v)
  for ax, key in zip(axes, ('accuracy', 'loss')):
    for m in columns:
      ys = [nan(summary['results'][str(L)][m].get(key)) for L in lengths]
      ci = [nan(summary['results'][str(L)][m].get(f'{key}_ci')) for L in lengths]
      ax.errorbar(lengths, ys, yerr=clipped_error_bars(ys, ci, 0.0, 1.0 if key == 'accuracy' else float('inf')),
                  marker='o', capsize=3, label=names[m], linestyle='--' if m == 'teacher' else '-')
    ax.set_xscale('log', base=2)
    ax.set_xticks(lengths)
    ax.set_xticklabels([str(L) for L in lengths])
    ax.set_xlabel('number of pairs' if summary.get('length_is') == 'num_pairs' else 'sequence length T')
    ax.set_ylabel(key + (' (nats/token)' if key == 'loss' else ''))
    ax.grid(alpha=0.3)
  axes[0].legend()
  fig.suptitle(summary.get('title') or f'{summary["task"]}')
  return save_figure(fig, path)


def mean_over_seeds(series: list[list[float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(mean, min, max) over seeds of equally long series (None -> NaN), truncated to the shortest."""
  n = min(len(v) for v in series)
  a = np.array([[np.nan if u is None else u for u in v[:n]] for v in series], np.float64)
  return np.nanmean(a, 0), np.nanmin(a, 0), np.nanmax(a, 0)


def learning_curves(curves: dict, path, names: dict, ylabel: str = 'held-out bits per token',
                    title: str = '') -> epath.Path:
  """One line per method: its held-out loss against (calibrated) wall-clock seconds, the mean over seeds with
  the seeds' range shaded. curves: {method: [per seed {'seconds': [...], 'rnn_only_bits': [...]}]}."""
  fig = Figure(figsize=(7, 4.2), dpi=100)
  ax = fig.subplots()
  for i, (m, per_seed) in enumerate(curves.items()):
    x = np.asarray(per_seed[0]['seconds'][:min(len(c['seconds']) for c in per_seed)], np.float64)
    mean, lo, hi = mean_over_seeds([c['rnn_only_bits'] for c in per_seed])
    style = '--' if m == 'teacher' else '-'
    ax.plot(x, mean, style, color=f'C{i}', marker='.', label=names[m])
    if len(per_seed) > 1:
      ax.fill_between(x, lo, hi, color=f'C{i}', alpha=0.15)
  ax.set_xlabel('training wall clock (s, one CPU core)')
  ax.set_ylabel(ylabel)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  if title:
    ax.set_title(title)
  return save_figure(fig, path)


def claims_curves(summary: dict, path, names: dict) -> epath.Path:
  """One panel per row of a claims study (smtjax/studies/claims.py): each method's validation accuracy against
  optimizer steps, mean over seeds with its 95% interval shaded, and the SMT teacher's (dashed)."""
  rows = summary['rows']
  fig = Figure(figsize=(6 * len(rows), 4.2), dpi=100)
  axes = np.atleast_1d(fig.subplots(1, len(rows)))
  nan = lambda v: np.asarray([np.nan if u is None else u for u in v], np.float64)
  for ax, (row, cells) in zip(axes, rows.items()):
    for i, (m, c) in enumerate(cells.items()):
      if 'curve' not in c:  # a cell not run (a report from a ledger that lacks its runs)
        continue
      x, y, ci = np.asarray(c['curve']['steps'], np.float64), nan(c['curve']['mean']), nan(c['curve']['ci'])
      ax.plot(x, y, color=f'C{i}', marker='.', label=f'{names[m]} ({c["name"]})')
      ax.fill_between(x, np.clip(y - ci, 0, 1), np.clip(y + ci, 0, 1), color=f'C{i}', alpha=0.15)
    teacher = next((c['teacher_curve'] for c in cells.values() if 'teacher_curve' in c), None)
    if teacher:
      ax.plot(teacher['steps'], nan(teacher['mean']), '--', color='gray', label='teacher (SMT)')
    ax.set_xlabel('optimizer steps')
    ax.set_ylabel('validation accuracy (RNN from its initial memory)')
    ax.set_title(f'{summary["task"]} T={summary["T"]}: {row.replace("_", " ")}')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  return save_figure(fig, path)


def tuning_curves(tuning: dict, path, names: dict, title: str = '') -> epath.Path:
  """One panel per method of a claims study's tuning (smtjax/studies/claims.py): each candidate's validation
  accuracy (RNN from its initial memory) against its optimizer steps, and an SMT candidate's teacher (dashed,
  same colour)."""
  fig = Figure(figsize=(4.5 * len(tuning), 4.2), dpi=100)
  axes = np.atleast_1d(fig.subplots(1, len(tuning), sharey=True))
  for ax, (m, t) in zip(axes, tuning.items()):
    for i, (name, c) in enumerate(sorted(t['curves'].items())):
      ax.plot(c['rnn']['steps'], c['rnn']['values'], color=f'C{i}', marker='.', label=name)
      if c.get('teacher', {}).get('steps'):
        ax.plot(c['teacher']['steps'], c['teacher']['values'], '--', color=f'C{i}')
    ax.set_xlabel('optimizer steps')
    ax.set_title(f'{names[m]}: {title}' if title else names[m], fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  axes[0].set_ylabel('validation accuracy (dashed: SMT teacher)')
  return save_figure(fig, path)


def recipe_curves(summary: dict, path, title: str = '') -> epath.Path:
  """The recipe study (smtjax/studies/recipe.py): each arm's validation accuracy (its teacher's, or the plain
  Transformer's) against optimizer steps, mean over seeds with the seeds' range shaded; the RNN's from its
  initial memory dashed in the same colour."""
  fig = Figure(figsize=(7, 4.2), dpi=100)
  ax = fig.subplots()
  for i, (arm, r) in enumerate(summary.items()):
    runs = list(r['runs'].values())
    x = np.asarray(runs[0]['steps'][:min(len(c['steps']) for c in runs)], np.float64)
    mean, lo, hi = mean_over_seeds([c['accuracy'] for c in runs])
    ax.plot(x, mean, color=f'C{i}', marker='.', label=arm)
    if len(runs) > 1:
      ax.fill_between(x, lo, hi, color=f'C{i}', alpha=0.12)
    if any(np.isfinite(c['rnn_accuracy']).any() for c in runs):  # the plain Transformer has no RNN
      ax.plot(x, mean_over_seeds([c['rnn_accuracy'] for c in runs])[0], '--', color=f'C{i}', alpha=0.7)
  ax.set_xlabel('optimizer steps')
  ax.set_ylabel('validation accuracy (dashed: RNN-only)')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  if title:
    ax.set_title('\n'.join(textwrap.wrap(title, 100)), fontsize=8)
  return save_figure(fig, path)


def accuracy_by_length(task: str, r: dict, path, names: dict) -> epath.Path:
  """Held-out accuracy against T (log2 axis) of an equal-wall-clock study over lengths (studies.crossover), one
  line per column (`names`: their labels), 95% intervals as error bars."""
  fig = Figure(figsize=(6.5, 4.2), dpi=100)
  ax = fig.subplots()
  Ts = [r['runs'][str(L)]['seq_len'] for L in r['lengths']]
  for col in r['runs'][str(r['lengths'][0])]['results']:
    ys = [r['runs'][str(L)]['results'][col]['accuracy']['mean'] for L in r['lengths']]
    ci = [r['runs'][str(L)]['results'][col]['accuracy']['ci'] for L in r['lengths']]
    ax.errorbar(Ts, ys, yerr=clipped_error_bars(ys, ci, 0.0, 1.0), marker='o', capsize=3,
                label=names.get(col, col), linestyle='--' if col == 'teacher' else '-')
  ax.set_xscale('log', base=2)
  ax.set_xticks(Ts)
  ax.set_xticklabels([str(t) for t in Ts])
  ax.set_xlabel('sequence length T')
  ax.set_ylabel('held-out accuracy')
  ax.set_title(f'{task}: equal wall clock' + (f', crossover T={r["crossover"]}' if r['crossover'] else ''))
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return save_figure(fig, path)


def accuracy_over_time(summaries: dict, path, names: dict) -> epath.Path:
  """Held-out accuracy against wall clock of equal-wall-clock studies (studies.linear_rnns), one panel per task,
  one line per method (`names`: their labels; mean over seeds)."""
  fig = Figure(figsize=(5 * len(summaries), 4.2), dpi=100)
  axes = fig.subplots(1, len(summaries), squeeze=False)[0]
  for ax, (task, s) in zip(axes, summaries.items()):
    for i, (col, per_seed) in enumerate(s['curves'].items()):
      mean, _, _ = mean_over_seeds([c['rnn_only_accuracy'] for c in per_seed])
      x = per_seed[0]['seconds'][:len(mean)]
      ax.plot(x, mean, '--' if col == 'teacher' else '-', color=f'C{i}', marker='.', label=names.get(col, col))
    ax.set_title(task)
    ax.set_xlabel('training wall clock (s, one CPU core)')
    ax.set_ylabel('held-out accuracy')
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=7)
  return save_figure(fig, path)


def ceiling_curves(summary: dict, path) -> epath.Path:
  """Teacher and RNN accuracy against each knob's values (studies.ceiling: one panel per knob, and one for steps)."""
  panels = list(summary['knobs'].items())
  fig = Figure(figsize=(4.5 * (len(panels) + 1), 3.8), dpi=100)
  axes = fig.subplots(1, len(panels) + 1, squeeze=False)[0]
  for ax, (knob, rows) in zip(axes, panels):
    x = np.arange(len(rows))
    for key, style in (('teacher', '--'), ('rnn', '-')):
      ys = [r[key]['mean'] for r in rows]
      ax.errorbar(x, ys, yerr=clipped_error_bars(ys, [r[key]['ci'] for r in rows], 0.0, 1.0),
                  linestyle=style, marker='o', capsize=3, label='teacher' if key == 'teacher' else 'RNN')
    ax.set_xticks(x)
    ax.set_xticklabels([r['value'] for r in rows])
    ax.set_title(knob)
    ax.set_ylabel('held-out accuracy')
    ax.grid(alpha=0.3)
  steps = summary['steps_curve']
  axes[-1].plot([p['step'] for p in steps], [p['teacher'] for p in steps], '--', marker='.', label='teacher')
  axes[-1].plot([p['step'] for p in steps], [p['rnn'] for p in steps], '-', marker='.', label='RNN')
  axes[-1].set_title('steps')
  axes[-1].set_xlabel('training step')
  axes[-1].grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  fig.suptitle(f'{summary["task"]}: teacher and RNN against memory, dynamics weight and steps')
  return save_figure(fig, path)


def loss_per_position(per_t: dict, path, names: dict, trained_len: int, title: str = '') -> epath.Path:
  """One line per method: the held-out loss at each sequence position (mean over seeds), with the training
  length marked: does a model use what it read long ago, and past the length it was trained on?"""
  fig = Figure(figsize=(7, 4.2), dpi=100)
  ax = fig.subplots()
  for i, (m, per_seed) in enumerate(per_t.items()):
    mean, _, _ = mean_over_seeds(per_seed)
    ax.plot(np.arange(len(mean)), mean, '--' if m == 'teacher' else '-', color=f'C{i}', label=names[m])
  ax.axvline(trained_len - 0.5, color='k', linewidth=0.8, label=f'training length T={trained_len}')
  ax.set_xlabel('position t in the held-out sequence (the RNN has read x_0..x_t)')
  ax.set_ylabel('bits per token')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  if title:
    ax.set_title(title)
  return save_figure(fig, path)


def compression_contours(result: dict, path, levels: int = 8) -> epath.Path:
  """Filled contours and labelled iso-loss lines of result['metric'] over (steps, memory size)."""
  m = result['metric']
  grid = np.array([[np.nan if v is None else v for v in row] for row in result['grids'][m]], np.float64)
  steps = np.asarray(result['steps'], np.float64)
  sizes = np.asarray(result['mem_sizes'], np.float64)
  fig = Figure(figsize=(6, 4), dpi=100)
  ax = fig.subplots()
  if grid.shape[0] >= 2 and grid.shape[1] >= 2 and np.isfinite(grid).any():
    X, Y = np.meshgrid(steps, np.log2(sizes))
    filled = ax.contourf(X, Y, grid, levels=levels, cmap='viridis_r')
    lines = ax.contour(X, Y, grid, levels=filled.levels, colors='k', linewidths=0.6)
    ax.clabel(lines, fmt='%.2f', fontsize=7)
    fig.colorbar(filled, ax=ax, label=m)
    ax.scatter(X, Y, s=4, color='w', edgecolors='k', linewidths=0.3)  # the measured grid points
    ax.set_yticks(np.log2(sizes))
    ax.set_yticklabels([str(int(z)) for z in sizes])
    ax.set_ylabel(f'memory size Z = {result["num_mem_tokens"]} x d')
  else:  # a single row or column: plain lines
    for z, row in zip(sizes, grid):
      ax.plot(steps, row, marker='o', label=f'Z={int(z)}')
    ax.legend(fontsize=7)
    ax.set_ylabel(m)
  ax.set_xlabel('training steps')
  ax.set_title(f'{result["config"] or result["task"]}: iso-{m} contours', fontsize=9)
  return save_figure(fig, path)


def memory_space(coords_BxTxP, labels_BxT, names, path, title: str = '', radius: float | None = None,
                 max_lines: int = 64, max_names: int = 16) -> epath.Path:
  """Scatter of P = 2 or 3 coordinates [B, T+1, P], coloured by label, trajectories as grey lines, each
  label's name at its centroid (the `max_names` shortest names only); `radius` draws the circle (P = 2)
  memories are confined to, and the axes zoom to the points."""
  coords, labels = np.asarray(coords_BxTxP), np.asarray(labels_BxT)
  P = coords.shape[-1]
  fig = Figure(figsize=(5.5, 5), dpi=100)
  ax = fig.add_subplot(projection='3d' if P == 3 else None)
  for traj in coords[:max_lines]:
    ax.plot(*traj.T, color='0.75', lw=0.6, zorder=1)
  ids = np.unique(labels)
  cmap = colormaps['tab20' if len(ids) > 10 else 'tab10']
  flat, flat_labels = coords.reshape(-1, P), labels.reshape(-1)
  # Names at centroids; with many states only the shortest names (the top of a tree) are written.
  named = set(sorted(ids, key=lambda i: (len(names[i]), i))[:max_names])
  for j, i in enumerate(ids):
    pts = flat[flat_labels == i]
    ax.scatter(*pts.T, s=10, color=cmap(j % cmap.N), zorder=2, label=names[i] if len(ids) <= 12 else None)
    if i in named:
      ax.text(*pts.mean(axis=0), names[i], fontsize=7, zorder=3)
  if radius and P == 2:
    lo, hi = flat.min(axis=0), flat.max(axis=0)
    pad = 0.1 * max(float(np.max(hi - lo)), 0.2)
    a = np.linspace(0, 2 * np.pi, 400)
    ax.plot(radius * np.cos(a), radius * np.sin(a), ':', color='0.6', lw=0.8)
    ax.set_xlim(lo[0] - pad, hi[0] + pad)
    ax.set_ylim(lo[1] - pad, hi[1] + pad)
    ax.set_aspect('equal')
  if len(ids) <= 12:
    ax.legend(fontsize=7, loc='best')
  if title:
    ax.set_title(title, fontsize=9)
  return save_figure(fig, path)
