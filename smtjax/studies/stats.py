"""Summaries over seeds: mean and a 95% confidence interval (Student's t over the seeds)."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as sps


def mean_ci(values, level: float = 0.95) -> dict:
  """{'mean', 'ci', 'n', 'std'} of the finite `values`: ci is the half-width t_{(1+level)/2, n-1} * s / sqrt(n)
  (NaN for n < 2; mean NaN for n = 0)."""
  v = np.asarray([float(x) for x in values if x is not None and math.isfinite(float(x))], np.float64)
  n = int(v.size)
  if n == 0:
    return {'mean': float('nan'), 'ci': float('nan'), 'n': 0, 'std': float('nan')}
  if n == 1:
    return {'mean': float(v[0]), 'ci': float('nan'), 'n': 1, 'std': float('nan')}
  sd = float(np.std(v, ddof=1))
  return {'mean': float(v.mean()), 'ci': float(sps.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)), 'n': n,
          'std': sd}


def fmt(mean, ci=None, digits: int = 3) -> str:
  """'0.812 ± 0.034', '0.812' (no interval) or 'n/a'."""
  if mean is None or not math.isfinite(float(mean)):
    return 'n/a'
  if ci is None or not math.isfinite(float(ci)):
    return f'{float(mean):.{digits}f}'
  return f'{float(mean):.{digits}f} ± {float(ci):.{digits}f}'
