"""What the real-data sources share: options, the tokenised cache, and random windows over token streams.

A real dataset becomes, per split, a list of flat token *segments* (one per source file, memory-mapped
from the cache). A training sequence is a random window of T+1 consecutive tokens inside one segment:
`x = w[:-1]`, `y = w[1:]` (`y_t = x_{t+1}`). Windows never cross a segment (file or split) boundary, so
train and test windows never overlap.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import os
import pathlib
import tempfile
from collections.abc import Callable, Sequence

import numpy as np

from smtjax.data.base import DataError, DataInfo, parse_options, row_rng  # noqa: F401  (parse_options re-exported)

log = logging.getLogger(__name__)

SPLITS = ('train', 'test')  # every real source has these; 'valid' only when held out (WindowSource.holding_out)
CACHE_VERSION = 1  # bump when a tokeniser changes so old caches are rebuilt


# --------------------------------------------------------------------------------------------- options

def seq_len_of(data_config) -> int:
  T = data_config.seq_len
  if not isinstance(T, (int, np.integer)) or T < 2:
    raise DataError(f'config.data.seq_len: must be an integer > 1, got {T!r}')
  return int(T)


def cache_root(option: str = '') -> pathlib.Path:
  """`options.cache_dir`, else $SMTJAX_CACHE, else ~/.cache/smtjax."""
  root = option or os.environ.get('SMTJAX_CACHE') or os.path.join('~', '.cache', 'smtjax')
  return pathlib.Path(root).expanduser()


def default_data_dir(name: str, cache_dir: str = '') -> list[pathlib.Path]:
  """Where a dataset is looked for when config.data.path is '': $SMTJAX_DATA_DIR/<name>, then the cache."""
  dirs = []
  if os.environ.get('SMTJAX_DATA_DIR'):
    dirs.append(pathlib.Path(os.environ['SMTJAX_DATA_DIR']).expanduser() / name)
  dirs.append(cache_root(cache_dir) / name)
  return dirs


def existing_path(path: str | os.PathLike, what: str = 'config.data.path') -> pathlib.Path:
  p = pathlib.Path(path).expanduser()
  if not p.exists():
    raise DataError(f'{what}: {p} does not exist (give an existing file or directory: --{what}=PATH)')
  return p


# ------------------------------------------------------------------------------------- token cache

def _cache_key(src: pathlib.Path, kind: str, params: str) -> str:
  st = src.stat()
  ident = f'{os.path.realpath(src)}|{st.st_size}|{st.st_mtime_ns}|{kind}|{params}|v{CACHE_VERSION}'
  return hashlib.sha256(ident.encode()).hexdigest()[:16]


def cached_tokens(src: pathlib.Path, kind: str, build: Callable[[pathlib.Path, object], None],
                  cache_dir: str = '', params: str = '') -> np.ndarray:
  """The flat uint8 token stream of `src`, memory-mapped from `<cache>/tokens/`; built once.

  `build(src, out_file)` writes the tokens (raw bytes) to the open binary file. The cache file is keyed
  by the source's absolute path, size and mtime (and `kind`/`params`, the tokeniser's settings), and is
  written to a temporary file then renamed, so concurrent builders and killed builds are safe.
  """
  d = cache_root(cache_dir) / 'tokens'
  target = d / f'{src.name}.{kind}.{_cache_key(src, kind, params)}.bin'
  if not target.exists():
    d.mkdir(parents=True, exist_ok=True)
    log.info('building token cache %s from %s', target, src)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=target.name + '.', suffix='.tmp')
    try:
      with os.fdopen(fd, 'wb') as f:
        build(src, f)
        f.flush()
        os.fsync(f.fileno())
      os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache may be shared
      os.replace(tmp, target)
    except BaseException:
      if os.path.exists(tmp):
        os.unlink(tmp)
      raise
  if target.stat().st_size == 0:
    return np.zeros(0, np.uint8)
  return np.memmap(target, dtype=np.uint8, mode='r')


# ------------------------------------------------------------------------------------------ splits

Segment = tuple[str, np.ndarray]  # (name for messages, flat token array)


def split_tail(segments: Sequence[Segment], fraction: float,
               what: str = 'config.data.options.test_fraction') -> dict[str, list[Segment]]:
  """Train = the first (1-fraction) of the concatenated stream, test = the rest (at least 1 token)."""
  if not 0 < fraction < 1:
    raise DataError(f'{what}: must be in (0, 1), got {fraction!r}')
  total = sum(len(a) for _, a in segments)
  cut = total - max(1, int(np.ceil(fraction * total)))
  train, test, pos = [], [], 0
  for name, a in segments:
    lo, hi = pos, pos + len(a)
    if lo < cut:
      train.append((name, a[:min(hi, cut) - lo]))
    if hi > cut:
      test.append((f'{name} (last {fraction:g} of the stream)', a[max(cut, lo) - lo:]))
    pos = hi
  return {'train': train, 'test': test}


# ---------------------------------------------------------------------------------- window source

class WindowSource:
  """Random windows of T+1 tokens from per-split lists of flat token segments.

  Row r of batch i of a split starts at a position drawn by `row_rng(seed, split, i, r)`, uniform over
  all valid window starts of the split, so a batch is a pure function of (seed, split, index, row).
  """

  def __init__(self, info: DataInfo, splits: dict[str, list[Segment]], seed: int):
    self.info, self.seed = info, int(seed)
    self._splits = splits
    W = info.seq_len + 1
    self._segments, self._cum = {}, {}
    for split in splits:
      segs = [(n, a) for n, a in splits[split] if len(a) >= W]
      if not segs:
        have = ', '.join(f'{n}: {len(a)} tokens' for n, a in splits[split]) or 'no data'
        raise DataError(f'{split} split: no segment holds a window of seq_len+1 = {W} tokens ({have}); '
                        'use a shorter config.data.seq_len or more data')
      self._segments[split] = [a for _, a in segs]
      self._cum[split] = np.cumsum([len(a) - W + 1 for _, a in segs]).tolist()

  def holding_out(self, fraction: float) -> WindowSource:
    """This source with a 'valid' split: the last `fraction` of the training stream, no longer trained on."""
    tail = split_tail(self._splits['train'], fraction, what='config.data.valid_fraction')
    return WindowSource(self.info, dict(self._splits, train=tail['train'], valid=tail['test']), self.seed)

  def stream(self, split: str) -> np.ndarray:
    """The split's tokens, its segments concatenated (image data: the images one after another)."""
    return np.concatenate(self._segments[split]) if len(self._segments[split]) > 1 else self._segments[split][0]

  def num_tokens(self, split: str) -> int:
    return int(sum(len(a) for a in self._segments[split]))

  def window_start(self, split: str, index: int, row: int) -> tuple[int, int]:
    """(segment, start) of row `row` of batch `index`."""
    cum = self._cum[split]
    pos = int(row_rng(self.seed, split, index, row).integers(cum[-1]))
    s = bisect.bisect_right(cum, pos)
    return s, pos - (cum[s - 1] if s else 0)

  def get_batch(self, split: str, index: int, row_start: int, row_stop: int) -> dict[str, np.ndarray]:
    if split not in self._segments:
      hint = " (hold one out of the training data with config.data.valid_fraction)" if split == 'valid' else ''
      raise DataError(f'no {split!r} split{hint}; this source has {", ".join(self._segments)}')
    W = self.info.seq_len + 1
    seg_B, start_B = np.array([self.window_start(split, index, r) for r in range(row_start, row_stop)],
                              np.int64).reshape(-1, 2).T
    w_BxW = np.empty((row_stop - row_start, W), np.int32)
    for s in np.unique(seg_B):
      rows = np.flatnonzero(seg_B == s)
      windows = np.lib.stride_tricks.sliding_window_view(self._segments[split][s], W)
      w_BxW[rows] = windows[start_B[rows]]
    return {'x': np.ascontiguousarray(w_BxW[:, :-1]), 'y': np.ascontiguousarray(w_BxW[:, 1:])}
