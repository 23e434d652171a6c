"""Summaries over seeds: mean and a 95% confidence interval (Student's t over the seeds)."""

from __future__ import annotations

import math

import numpy as np
from absl import logging
from scipy import stats as sps

from smtjax import workdir as workdir_lib


def mean_ci(values, level: float = 0.95) -> dict:
  """{'mean', 'ci', 'n', 'std', 'dropped'} of the finite `values`: ci is the half-width t_{(1+level)/2, n-1} *
  s / sqrt(n) (NaN for n < 2; mean NaN for n = 0); `dropped` counts the values left out (None, NaN or
  infinite: a diverged or missing run), logged as a warning so a mean over fewer seeds never passes unseen."""
  values = list(values)
  v = np.asarray([float(x) for x in values if x is not None and math.isfinite(float(x))], np.float64)
  n, dropped = int(v.size), len(values) - int(v.size)
  if dropped:
    logging.warning('mean_ci: %d of %d values are missing or not finite; the mean is over %d', dropped,
                    len(values), n)
  if n == 0:
    return {'mean': float('nan'), 'ci': float('nan'), 'n': 0, 'std': float('nan'), 'dropped': dropped}
  if n == 1:
    return {'mean': float(v[0]), 'ci': float('nan'), 'n': 1, 'std': float('nan'), 'dropped': dropped}
  sd = float(np.std(v, ddof=1))
  return {'mean': float(v.mean()), 'ci': float(sps.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)), 'n': n,
          'std': sd, 'dropped': dropped}


def fmt(mean, ci=None, digits: int = 3) -> str:
  """'0.812 ± 0.034', '0.812' (no interval) or 'n/a'."""
  if mean is None or not math.isfinite(float(mean)):
    return 'n/a'
  if ci is None or not math.isfinite(float(ci)):
    return f'{float(mean):.{digits}f}'
  return f'{float(mean):.{digits}f} ± {float(ci):.{digits}f}'


def table(head: list[str], rows: list[list]) -> list[str]:
  """A Markdown table's lines: the header, its rule, one line per row (cells as str)."""
  return [row(head), '|' + '---|' * len(head)] + [row(r) for r in rows]


def row(cells: list) -> str:
  """One line of a Markdown table (cells as str): for a table printed a row at a time."""
  return '| ' + ' | '.join(map(str, cells)) + ' |'


def write_markdown(path, lines: list[str]) -> str:
  """Every study's Markdown file: `lines` joined, written whole; returns the text."""
  text = '\n'.join(lines) + '\n'
  workdir_lib.write_text(path, text)
  return text
