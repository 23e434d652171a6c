"""Synthetic sequence tasks (method.md §10), each registered as a source factory `(data_config, seed)`.

Conventions (method.md §2): x_t in [0, vocab) is the input at step t and -1 is (left) padding; y_t is
the token to predict after reading x_0..x_t and -1 means no target. Every row is drawn from its own
generator `row_rng(seed, split, index, row)`, so a batch is the same whatever its rows are split into.

Vocabulary layouts (n = num_symbols; symbols are [0, n)):
  retrieval    n + 2: MARKER = n, QUERY = n + 1
  copy         n + 1: SEP = n
  stack        n + 1: POP = n
  keys_values  n + 1: QUERY = n
  modular      P (the modulus): residues [0, P)
  parity       2: bits
  counting     m (the modulus): increments [0, m)
"""

from __future__ import annotations

import numbers

import numpy as np

from smtjax.data.base import SPLIT_IDS, DataError, DataInfo, parse_options, row_rng

# data.name -> source factory `(data_config, seed) -> Source`, filled where each task is defined (`_task`); the
# table in smtjax.data.registry takes it whole.
SOURCES: dict[str, type] = {}


def _task(name: str, description: str):
  """Registers a task class under `name`, with one line saying what the task asks of a model."""
  def register(cls):
    if name in SOURCES:
      raise ValueError(f'synthetic task {name!r} is already registered (by {SOURCES[name].__name__})')
    cls.name, cls.description = name, description
    SOURCES[name] = cls
    return cls
  return register


# ----------------------------------------------------------------------------------------------
# Option parsing: every message names the config field so a bad override is easy to find.


def _int(opts: dict, field: str, lo: int) -> int:
  v = opts[field]
  if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo:
    raise DataError(f'config.data.options.{field}: must be an integer >= {lo}, got {v!r}')
  return int(v)


def _float(opts: dict, field: str, lo: float, hi: float, lo_open: bool = False) -> float:
  v = opts[field]
  ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and (lo < v if lo_open else lo <= v) and v <= hi
  if not ok:
    interval = f'{"(" if lo_open else "["}{lo}, {hi}]'
    raise DataError(f'config.data.options.{field}: must be a number in {interval}, got {v!r}')
  return float(v)


def _bool(opts: dict, field: str) -> bool:
  v = opts[field]
  if not isinstance(v, (bool, np.bool_)):
    raise DataError(f'config.data.options.{field}: must be True or False, got {v!r}')
  return bool(v)


def _seq_len(data_config, minimum: int) -> int:
  T = data_config.seq_len
  if isinstance(T, bool) or not isinstance(T, numbers.Integral) or T < minimum:
    raise DataError(f'config.data.seq_len: task {data_config.name!r} needs an integer >= {minimum}, got {T!r}')
  return int(T)


def _decoder(names: list[str]):
  """tokens -> str: each token by name, '_' for -1 (padding / no target), rows of a 2-D array on lines."""
  def decode(tokens) -> str:
    t = np.asarray(tokens)
    if t.ndim > 1:
      return '\n'.join(decode(r) for r in t.reshape(-1, t.shape[-1]))
    return ' '.join('_' if v == -1 else names[v] if 0 <= v < len(names) else f'<{v}>' for v in t.tolist())
  return decode


# ----------------------------------------------------------------------------------------------


class _Task:
  """A source. Each row draws `num_uniforms` floats in [0, 1) from its own generator; `_build` turns the
  stacked draws into x, y for all rows at once (vectorised over the batch, so a batch costs little more
  than creating its generators).
  """

  num_uniforms: int

  def __init__(self, seed: int, T: int, vocab_size: int, names: list[str]):
    self.seed, self.T = int(seed), T
    self.info = DataInfo(vocab_size=vocab_size, seq_len=T, kind='synthetic', decode=_decoder(names))

  # What a study's "length" of this task is (`swept_length`, `resize`): T by default.
  length_is = 'seq_len'
  longer_tests = True  # whether scoring at a multiple of T tests something (not only more padding)

  @classmethod
  def swept_length(cls, data_config) -> int:
    return int(data_config.seq_len)

  @classmethod
  def resize(cls, data_config, length: int) -> None:
    data_config.seq_len = int(length)

  def get_batch(self, split: str, index: int, row_start: int, row_stop: int) -> dict[str, np.ndarray]:
    """Rows [row_start, row_stop) of batch `index` of `split`: {'x', 'y'}: int32 [rows, T]."""
    if split not in SPLIT_IDS:  # 'valid' is one more independent stream of the task
      raise DataError(f"split must be one of {', '.join(SPLIT_IDS)}, got {split!r}")
    if not 0 <= row_start <= row_stop:
      raise DataError(f'bad row range [{row_start}, {row_stop})')
    rows = row_stop - row_start
    x = np.full((rows, self.T), -1, np.int32)
    y = np.full((rows, self.T), -1, np.int32)
    if rows:
      rngs = [row_rng(self.seed, split, index, r) for r in range(row_start, row_stop)]
      u = np.stack([rng.random(self.num_uniforms) for rng in rngs])
      self._build(u, x, y, rngs)
    return {'x': x, 'y': y}

  def _build(self, u: np.ndarray, x: np.ndarray, y: np.ndarray, rngs: list):
    """Writes x, y (int32 [rows, T], all -1) from u (float [rows, num_uniforms]); rngs: the rows' generators,
    already used for u, for the rare draw that u cannot cover."""
    raise NotImplementedError


def _uint(u: np.ndarray, n) -> np.ndarray:
  """Uniform integers in [0, n) from uniforms u in [0, 1) (bias ~ n/2**53, negligible), int64 of u's shape."""
  return np.minimum((u * n).astype(np.int64), np.asarray(n, np.int64) - 1)


def _symbol_names(n: int, specials: list[str]) -> list[str]:
  return [str(i) for i in range(n)] + specials


@_task('retrieval', 'needle retrieval: random symbols, MARKER then the needle early on; at the '
                 'final QUERY predict the needle')
class Retrieval(_Task):
  """Needle: MARKER at p (uniform in the first `needle_region` of the sequence), needle at p+1, QUERY last."""

  def __init__(self, data_config, seed):
    o = parse_options(data_config, {'num_symbols': 8, 'noise': 0.0, 'needle_region': 0.5})
    T = _seq_len(data_config, 3)  # MARKER, needle, QUERY
    self.n = _int(o, 'num_symbols', 1)
    self.noise = _float(o, 'noise', 0.0, 1.0)
    region = _float(o, 'needle_region', 0.0, 1.0, lo_open=True)
    # Marker positions [0, hi); the needle at p+1 must come before QUERY at T-1, so p <= T-3.
    self.hi = int(min(max(1, int(round(region * T))), T - 2))
    self.marker, self.query = self.n, self.n + 1
    self.num_uniforms = T + 3  # T fillers, the marker position, the noise coin, the noise label
    super().__init__(seed, T, self.n + 2, _symbol_names(self.n, ['#', '?']))

  def _build(self, u, x, y, rngs):
    T, ar = self.T, np.arange(len(u))
    x[:] = _uint(u[:, :T], self.n)
    p = _uint(u[:, T], self.hi)
    x[ar, p] = self.marker
    x[:, T - 1] = self.query
    # u < noise is never true for noise = 0 and always for noise = 1 (u < 1).
    y[:, T - 1] = np.where(u[:, T + 1] < self.noise, _uint(u[:, T + 2], self.n), x[ar, p + 1])


@_task('copy', 'string copy: a random string, SEP, then the (reversed) string predicted one symbol ahead')
class Copy(_Task):
  """x = [s_0..s_{M-1}, SEP, r_0..r_{M-2}] left-padded to T; y[SEP + j] = r_j (r = s reversed by default)."""

  def __init__(self, data_config, seed):
    T = _seq_len(data_config, 2)
    o = parse_options(data_config, {'length': None, 'num_symbols': 8, 'reverse': True})
    if o['length'] is None:
      o['length'] = T // 2
    self.M = _int(o, 'length', 1)
    if 2 * self.M > T:
      raise DataError(f'config.data.options.length: a string of length {self.M} needs 2*length = {2 * self.M} '
                      f'positions, more than config.data.seq_len={T}')
    self.n = _int(o, 'num_symbols', 1)
    self.reverse = _bool(o, 'reverse')
    self.sep = self.n
    self.num_uniforms = self.M
    super().__init__(seed, T, self.n + 1, _symbol_names(self.n, ['|']))

  def _build(self, u, x, y, rngs):
    T, M = self.T, self.M
    s = _uint(u, self.n)
    r = s[:, ::-1] if self.reverse else s
    o = T - 2 * M  # left padding
    x[:, o:o + M] = s
    x[:, o + M] = self.sep
    x[:, o + M + 1:] = r[:, :M - 1]
    y[:, o + M:] = r


@_task('stack', 'stack operations: push a symbol or POP by coin flip within max_depth; on '
                 'POP predict the popped symbol')
class Stack(_Task):
  """Push a random symbol or POP by fair coin (push when empty, pop when full); y on POP = popped symbol."""

  def __init__(self, data_config, seed):
    T = _seq_len(data_config, 2)
    o = parse_options(data_config, {'num_symbols': 8, 'max_depth': 5})
    self.n = _int(o, 'num_symbols', 1)
    self.D = _int(o, 'max_depth', 1)
    self.pop = self.n
    self.num_uniforms = T  # one per step: its parity is the coin, the rest the symbol a push adds
    super().__init__(seed, T, self.n + 1, _symbol_names(self.n, ['^']))

  def _build(self, u, x, y, rngs):
    T, D = self.T, self.D
    v = _uint(u, 2 * self.n)
    coin, sym = v % 2, v // 2
    # The depth walk without a loop over t: fold a free +-1 walk W onto [0, D] with the tent map
    # d = min(W mod 2D, 2D - W mod 2D). Inside (0, D) each step goes up or down with probability 1/2,
    # at 0 it must go up and at D down: exactly the reflecting walk "fair coin, push when empty, pop
    # when full".
    w = np.cumsum(2 * coin - 1, axis=1)
    m = np.mod(w, 2 * D)
    depth = np.minimum(m, 2 * D - m)  # after step t
    prev = np.concatenate([np.zeros_like(depth[:, :1]), depth[:, :-1]], axis=1)  # before step t
    push = depth > prev
    x[:] = np.where(push, sym, self.pop)
    # Match each pop to its push: order a row's steps by (stack slot, time). Within one slot the steps
    # alternate push, pop, push, pop, ..., so a pop's push comes right before it in that order.
    slot = np.where(push, depth, prev)  # 1-based slot written by a push / emptied by a pop
    order = np.argsort(slot * T + np.arange(T), axis=1)
    sym_sorted = np.take_along_axis(sym, order, axis=1)
    before = np.concatenate([np.zeros_like(sym_sorted[:, :1]), sym_sorted[:, :-1]], axis=1)
    popped = np.empty_like(sym)
    np.put_along_axis(popped, order, before, axis=1)
    y[:] = np.where(push, -1, popped)


@_task('keys_values', 'associative recall: key/value pairs, QUERY and one key; predict its value')
class KeysValues(_Task):
  """x = [k_1 v_1 .. k_n v_n QUERY k_q v_q[:-1]] left-padded; y predicts v_q one token ahead."""

  _FLOYD_MAX = 2 ** 32  # up to here keys are drawn exactly from uniforms; beyond, by digits
  # A study's length is the number of pairs; T follows (the pairs and the query), and longer sequences would
  # only add padding.
  length_is = 'num_pairs'
  longer_tests = False

  @classmethod
  def swept_length(cls, data_config) -> int:
    return int(data_config.options.get('num_pairs', 4))

  @classmethod
  def resize(cls, data_config, length: int) -> None:
    o = data_config.options
    o.num_pairs = int(length)
    data_config.seq_len = (o.num_pairs + 1) * (o.get('key_len', 2) + o.get('value_len', 1))

  def __init__(self, data_config, seed):
    T = _seq_len(data_config, 2)
    o = parse_options(data_config, {'num_pairs': 4, 'key_len': 2, 'value_len': 1, 'num_symbols': 8})
    self.n = _int(o, 'num_symbols', 1)
    self.pairs = _int(o, 'num_pairs', 1)
    self.kl = _int(o, 'key_len', 1)
    self.vl = _int(o, 'value_len', 1)
    need = (self.pairs + 1) * (self.kl + self.vl)
    if need > T:
      raise DataError(f'config.data.options.num_pairs: {self.pairs} pairs (key_len={self.kl}, value_len={self.vl}) '
                      f'and the query need {need} tokens, more than config.data.seq_len={T}')
    self.space = self.n ** self.kl  # Python int: the number of distinct keys
    if self.space < self.pairs:
      raise DataError(f'config.data.options.num_pairs: {self.pairs} distinct keys do not exist with '
                      f'num_symbols={self.n} and key_len={self.kl} ({self.space} keys)')
    self.query = self.n
    k = self.pairs
    # Keys: k (Floyd) + k (shuffle) uniforms, or k*key_len digits; then the values and the query index.
    self._key_u = 2 * k if self.space <= self._FLOYD_MAX else k * self.kl
    self.num_uniforms = self._key_u + k * self.vl + 1
    super().__init__(seed, T, self.n + 1, _symbol_names(self.n, ['?']))

  def _keys(self, u: np.ndarray, rngs: list) -> np.ndarray:
    """[rows, pairs, key_len] keys, distinct within each row, uniformly random."""
    rows, k, kl, n = len(u), self.pairs, self.kl, self.n
    if self.space > self._FLOYD_MAX:
      keys = _uint(u.reshape(rows, k, kl), n)
      for i in range(rows):  # a repeat has probability < pairs**2 / 2**33: redraw that row
        while len(np.unique(keys[i], axis=0)) < k:
          keys[i] = rngs[i].integers(0, n, (k, kl))
      return keys
    # Floyd's algorithm draws a uniform k-subset of [0, space); a random order then makes it a uniform
    # sequence of distinct ids, whose base-n digits are the key tokens.
    ids = np.empty((rows, k), np.int64)
    for i in range(k):
      j = self.space - k + i
      t = _uint(u[:, i], j + 1)
      dup = (ids[:, :i] == t[:, None]).any(axis=1)
      ids[:, i] = np.where(dup, j, t)
    ids = np.take_along_axis(ids, np.argsort(u[:, k:2 * k], axis=1), axis=1)
    powers = n ** np.arange(kl - 1, -1, -1, dtype=np.int64)
    return (ids[:, :, None] // powers) % n

  def _build(self, u, x, y, rngs):
    T, k, kl, vl = self.T, self.pairs, self.kl, self.vl
    rows, ar = len(u), np.arange(len(u))
    keys = self._keys(u[:, :self._key_u], rngs)
    values = _uint(u[:, self._key_u:-1], self.n).reshape(rows, k, vl)
    q = _uint(u[:, -1], k)
    o = T - (k + 1) * (kl + vl)  # left padding
    x[:, o:o + k * (kl + vl)] = np.concatenate([keys, values], axis=2).reshape(rows, -1)
    x[:, T - vl - kl] = self.query
    x[:, T - vl - kl + 1:T - vl + 1] = keys[ar, q]
    x[:, T - vl + 1:] = values[ar, q, :vl - 1]
    y[:, T - vl:] = values[ar, q]  # at the key's last token, then at each value token but the last


@_task('modular', 'modular arithmetic in context: pairs (a, (w*a+b) mod P) with hidden w, b; predict each output')
class Modular(_Task):
  """x = [a_1, f_1, a_2, f_2, ..] left-padded, f_i = (w*a_i + b) mod P with hidden w, b per sequence;
  y[a_i] = f_i. w is uniform in [1, 1 + num_w) and b in [0, num_b) (defaults: every w in [1, P) and every
  b in [0, P)); fewer values make the in-context inference easier (method.md §10: the range of w, b)."""

  def __init__(self, data_config, seed):
    T = _seq_len(data_config, 2)
    o = parse_options(data_config, {'modulus': 17, 'num_examples': None, 'num_w': None, 'num_b': None})
    if o['num_examples'] is None:
      o['num_examples'] = T // 2
    self.P = _int(o, 'modulus', 2)
    self.k = _int(o, 'num_examples', 1)
    self.num_w = _int(o, 'num_w', 1) if o['num_w'] is not None else self.P - 1
    self.num_b = _int(o, 'num_b', 1) if o['num_b'] is not None else self.P
    if self.num_w > self.P - 1:
      raise DataError(f'config.data.options.num_w: {self.num_w} values of w in [1, P) need modulus > {self.num_w}, '
                      f'got modulus={self.P}')
    if self.num_b > self.P:
      raise DataError(f'config.data.options.num_b: {self.num_b} values of b in [0, P) need modulus >= {self.num_b}, '
                      f'got modulus={self.P}')
    if 2 * self.k > T:
      raise DataError(f'config.data.options.num_examples: {self.k} examples need {2 * self.k} tokens, more than '
                      f'config.data.seq_len={T}')
    self.num_uniforms = self.k + 2  # w, b, a_1..a_k
    super().__init__(seed, T, self.P, [str(i) for i in range(self.P)])

  def _build(self, u, x, y, rngs):
    P = self.P
    w = 1 + _uint(u[:, :1], self.num_w)
    b = _uint(u[:, 1:2], self.num_b)
    a = _uint(u[:, 2:], P)
    f = (w * a + b) % P
    o = self.T - 2 * self.k  # left padding
    x[:, o::2] = a
    x[:, o + 1::2] = f
    y[:, o::2] = f


@_task('parity', 'parity: random bits; predict the running XOR')
class Parity(_Task):
  """Random bits; y_t = x_0 XOR .. XOR x_t."""

  def __init__(self, data_config, seed):
    T = _seq_len(data_config, 2)
    parse_options(data_config, {})
    self.num_uniforms = T
    super().__init__(seed, T, 2, ['0', '1'])

  def _build(self, u, x, y, rngs):
    x[:] = u < 0.5
    y[:] = np.cumsum(x, axis=1) % 2


@_task('counting', 'modular counting: random increments in [0, m); predict the running sum mod '
                 'm (every step, or only the last)')
class Counting(_Task):
  """Random increments x_t in [0, modulus); y_t = (x_0 + .. + x_t) mod modulus: state tracking that a finite
  automaton does and a linear recurrence cannot (modulus 2 is parity). `targets`: 'every' step (dense) or
  only the 'last' (sparse: the same task, one target per sequence)."""

  def __init__(self, data_config, seed):
    T = _seq_len(data_config, 2)
    o = parse_options(data_config, {'modulus': 5, 'targets': 'every'})
    self.m = _int(o, 'modulus', 2)
    if o['targets'] not in ('every', 'last'):
      raise DataError(f"config.data.options.targets: must be 'every' or 'last', got {o['targets']!r}")
    self.last_only = o['targets'] == 'last'
    self.num_uniforms = T
    super().__init__(seed, T, self.m, [str(i) for i in range(self.m)])

  def _build(self, u, x, y, rngs):
    x[:] = _uint(u, self.m)
    counts = np.cumsum(x, axis=1) % self.m
    if self.last_only:
      y[:, -1] = counts[:, -1]
    else:
      y[:] = counts


TASKS = tuple(SOURCES)


def _task_of(name: str):
  return SOURCES.get(name, _Task)  # a file source's length is its T, as a task's by default


def swept_length(data_config) -> int:
  """The length a study sweeps for this data (`data.seq_len`; keys_values: its number of pairs)."""
  return _task_of(data_config.name).swept_length(data_config)


def resize(data_config, length: int) -> None:
  """Sets `data_config` to a study's `length` (`swept_length`): T, or for keys_values the pairs and the T they
  need."""
  _task_of(data_config.name).resize(data_config, length)


def length_is(name: str) -> str:
  """'seq_len', or the option a study's length sets ('num_pairs' for keys_values)."""
  return _task_of(name).length_is


def longer_tests(name: str) -> bool:
  """Whether scoring at a multiple of T tests length generalization (keys_values: only more padding)."""
  return _task_of(name).longer_tests
