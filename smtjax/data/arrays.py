"""Bring your own data: a flat token stream (`tokens`, a `.npy`) or `(x, y)` sequences (`arrays`, a `.npz`).

    --config.data.name=tokens --config.data.path=stream.npy   # 1-D integer tokens; windows as for text
    --config.data.name=arrays --config.data.path=task.npz     # x [N, T] and optionally y [N, T]

Options (both): `vocab_size` (0 = max token + 1), `test_path` (a second file for the test split, else
the last `test_fraction`), `decode` ('ids': tokens as space-separated numbers, or 'bytes': as text).
`arrays` with `config.data.seq_len = 0` takes T from the file (the width of x); `configs/arrays.py` and
`configs/tokens.py` also infer the model's vocabulary (`config_lib.infer_from_data`).
"""

from __future__ import annotations

import pathlib
import zipfile

import numpy as np

from smtjax.data import stream
from smtjax.data.base import DataError, DataInfo, row_rng
from smtjax.data.text import decode_text


def decode_ids(tokens) -> str:
  t = np.asarray(tokens).reshape(-1)
  return ' '.join(str(int(v)) for v in t if v >= 0)


def _decoder(name: str):
  if name not in ('ids', 'bytes'):
    raise DataError(f"config.data.options.decode: unknown value {name!r}; expected 'ids' or 'bytes'")
  return decode_ids if name == 'ids' else decode_text


def _check_range(path, what: str, a: np.ndarray, lo: int, vocab: int):
  """Raises DataError naming the file if `a` has a value outside [lo, vocab)."""
  if not np.issubdtype(a.dtype, np.integer):
    raise DataError(f'{path}: {what} must hold integer tokens, got dtype {a.dtype}')
  if a.size == 0 or (int(a.min()) >= lo and int(a.max()) < vocab):
    return
  pos = np.unravel_index(np.argmax((a < lo) | (a >= vocab)), a.shape)
  where = int(pos[0]) if a.ndim == 1 else tuple(int(p) for p in pos)
  note = '' if lo == 0 else ' (-1 = none)'
  raise DataError(f'{path}: {what} has token {int(a[pos])} at position {where}, outside the vocabulary '
                  f'[{lo}, {vocab}){note} (config.data.options.vocab_size={vocab})')


def _vocab(option: int, *arrays) -> int:
  if option:
    if not isinstance(option, (int, np.integer)) or option < 1:
      raise DataError('config.data.options.vocab_size: must be a positive integer (or 0: max token + 1), '
                      f'got {option!r}')
    return int(option)
  return int(max((int(a.max()) for a in arrays if a.size), default=0)) + 1


def _load_npy(path: pathlib.Path) -> np.ndarray:
  if not path.is_file():
    raise DataError(f'{path}: not a file (expected a .npy token stream)')
  try:
    a = np.load(path, mmap_mode='r', allow_pickle=False)
  except (ValueError, OSError, EOFError) as e:
    raise DataError(f'{path}: not a readable .npy array ({e})') from None
  if not isinstance(a, np.ndarray) or a.ndim != 1:
    raise DataError(f'{path}: expected a 1-D token array, got shape {getattr(a, "shape", None)}')
  if a.size == 0:
    raise DataError(f'{path}: the token array is empty')
  return a


def tokens(data_config, seed: int):
  """A flat token stream from a 1-D integer `.npy` (memory-mapped); random windows of T+1 tokens."""
  o = stream.parse_options(data_config, dict(vocab_size=0, test_path='', test_fraction=0.01, decode='ids'), 'tokens')
  T = stream.seq_len_of(data_config)
  if not data_config.path:
    raise DataError('config.data.path: the tokens source needs a .npy file of tokens (--config.data.path=FILE.npy)')
  path = stream.existing_path(data_config.path)
  train = _load_npy(path)
  test = _load_npy(stream.existing_path(o['test_path'], 'config.data.options.test_path')) if o['test_path'] else None
  vocab = _vocab(o['vocab_size'], train, *([] if test is None else [test]))
  _check_range(path, 'the stream', train, 0, vocab)
  if test is not None:
    _check_range(o['test_path'], 'the stream', test, 0, vocab)
    splits = {'train': [(str(path), train)], 'test': [(o['test_path'], test)]}
  else:
    splits = stream.split_tail([(str(path), train)], o['test_fraction'])
  info = DataInfo(vocab_size=vocab, seq_len=T, kind='text', decode=_decoder(o['decode']))
  return stream.WindowSource(info, splits, seed)


def _load_xy(path: pathlib.Path, T: int | None, suffix: str = '',
             length_from: str = 'config.data.seq_len') -> tuple[np.ndarray, np.ndarray] | None:
  """(x, y) [N, T] from arrays `x{suffix}` and `y{suffix}` of a .npz; None when `suffix` and absent.

  Without y: sequences of T+1 tokens give x = s[:-1], y = s[1:]; sequences of T tokens get next-token
  targets with -1 (no target) at the last step. T None: the width of x (`length_from` names where T came
  from in the error for a file of another length).
  """
  xk, yk = 'x' + suffix, 'y' + suffix
  if not path.is_file():
    raise DataError(f'{path}: not a file (expected a .npz with arrays x [N, T] and optionally y [N, T])')
  try:
    with np.load(path, allow_pickle=False) as z:
      if xk not in z.files:
        if suffix:
          return None
        raise DataError(f'{path}: no array named "x" (it holds: {", ".join(z.files) or "nothing"}); '
                        'expected x [N, T] and optionally y [N, T]')
      x = z[xk]
      y = z[yk] if yk in z.files else None
  except AttributeError:  # np.load returned a plain array: a .npy, not a .npz
    raise DataError(f'{path}: not a .npz archive (expected arrays x [N, T] and optionally y [N, T])') from None
  except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
    raise DataError(f'{path}: not a readable .npz archive ({e})') from None
  if x.ndim != 2:
    raise DataError(f'{path}: {xk} must be [N, T], got shape {x.shape}')
  if T is None:
    T = x.shape[1]
  if y is None and x.shape[1] == T + 1:
    x, y = x[:, :-1], x[:, 1:]
  if x.shape[1] != T:
    fix = f' (set --config.data.seq_len={x.shape[1]})' if length_from == 'config.data.seq_len' else ''
    raise DataError(f'{path}: {xk} holds sequences of length {x.shape[1]}, but {length_from} is {T}{fix}')
  if y is None:
    y = np.concatenate([x[:, 1:], np.full((x.shape[0], 1), -1, x.dtype)], axis=1)
  if y.shape != x.shape:
    raise DataError(f'{path}: {yk} has shape {y.shape}, but {xk} has {x.shape}')
  if x.shape[0] == 0:
    raise DataError(f'{path}: {xk} holds no sequences')
  for name, a in ((xk, x), (yk, y)):
    if not np.issubdtype(a.dtype, np.integer):
      raise DataError(f'{path}: {name} must hold integer tokens, got dtype {a.dtype}')
  return x, y


class RowSource:
  """Random rows of fixed (x, y) arrays: row r of batch i is example `row_rng(seed, split, i, r)`."""

  def __init__(self, info: DataInfo, splits: dict[str, tuple[np.ndarray, np.ndarray]], seed: int):
    self.info, self.seed = info, int(seed)
    self._splits = {k: (x.astype(np.int32), y.astype(np.int32)) for k, (x, y) in splits.items()}

  def get_batch(self, split: str, index: int, row_start: int, row_stop: int) -> dict[str, np.ndarray]:
    if split not in stream.SPLITS:
      raise ValueError(f'unknown split {split!r}; expected one of {stream.SPLITS}')
    x, y = self._splits[split]
    ids = [int(row_rng(self.seed, split, index, r).integers(len(x))) for r in range(row_start, row_stop)]
    return {'x': x[ids], 'y': y[ids]}


def arrays(data_config, seed: int):
  """Any sequence task from a `.npz`: x [N, T] and optionally y [N, T] (-1 = no target; absent: next token).

  Test split: `options.test_path`, else arrays `x_test`/`y_test` in the same file, else the last
  `options.test_fraction` of the rows.
  """
  o = stream.parse_options(data_config, dict(vocab_size=0, test_path='', test_fraction=0.1, decode='ids'), 'arrays')
  T = stream.seq_len_of(data_config) if data_config.seq_len != 0 else None  # 0: the file's length
  if not data_config.path:
    raise DataError('config.data.path: the arrays source needs a .npz file (--config.data.path=FILE.npz)')
  path = stream.existing_path(data_config.path)
  x, y = _load_xy(path, T)
  length_from = 'config.data.seq_len' if T else f'the length of x in {path}'
  T = x.shape[1]
  if o['test_path']:
    test_file = stream.existing_path(o['test_path'], 'config.data.options.test_path')
    test = _load_xy(test_file, T, length_from=length_from)
  else:
    test_file, test = path, _load_xy(path, T, suffix='_test', length_from=length_from)
  if test is None:
    if not 0 < o['test_fraction'] < 1:
      raise DataError(f'config.data.options.test_fraction: must be in (0, 1), got {o["test_fraction"]!r}')
    if len(x) < 2:
      raise DataError(f'{path}: holds {len(x)} sequence; a train/test split needs at least 2 '
                      '(or give config.data.options.test_path)')
    cut = len(x) - min(len(x) - 1, max(1, round(o['test_fraction'] * len(x))))
    test, (x, y) = (x[cut:], y[cut:]), (x[:cut], y[:cut])
  vocab = _vocab(o['vocab_size'], x, y, *test)
  for f, (xx, yy) in ((path, (x, y)), (test_file, test)):
    _check_range(f, 'x', xx, -1, vocab)
    _check_range(f, 'y', yy, -1, vocab)
  info = DataInfo(vocab_size=vocab, seq_len=T, kind='text', decode=_decoder(o['decode']))
  return RowSource(info, {'train': (x, y), 'test': test}, seed)

