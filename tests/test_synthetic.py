"""Tests for smtjax.data.synthetic: the batch contract of every task, and each task's targets checked
against an independent reference computed from x (method.md §2 and §10)."""

import numpy as np
import pytest

from smtjax.config import default_config
from smtjax.data import DataError, known_sources, make_source, synthetic

T = 32


def source(name, seq_len=T, seed=0, **options):
  """The source for task `name` built from a default config with these data options."""
  c = default_config()
  c.data.name = name
  c.data.seq_len = seq_len
  for k, v in options.items():
    c.data.options[k] = v
  return make_source(c.data, seed)


def batch(src, rows=64, index=0, split='train'):
  b = src.get_batch(split, index, 0, rows)
  return b['x'], b['y']


# Each task with non-default options too, so the contract holds beyond the defaults.
CASES = [
    ('retrieval', {}),
    ('retrieval', {'num_symbols': 3, 'noise': 0.5, 'needle_region': 1.0}),
    ('copy', {}),
    ('copy', {'length': 5, 'reverse': False, 'num_symbols': 2}),
    ('stack', {}),
    ('stack', {'max_depth': 1, 'num_symbols': 3}),
    ('keys_values', {}),
    ('keys_values', {'num_pairs': 3, 'key_len': 1, 'value_len': 3, 'num_symbols': 5}),
    ('modular', {}),
    ('modular', {'modulus': 5, 'num_examples': 7}),
    ('parity', {}),
    ('counting', {}),
    ('counting', {'modulus': 3, 'targets': 'last'}),
]
IDS = [f'{n}-{i}' for i, (n, _) in enumerate(CASES)]


def test_tasks_are_registered_by_name_where_defined():
  assert set(synthetic.TASKS) == {'retrieval', 'copy', 'stack', 'keys_values', 'modular', 'parity', 'counting'}
  assert set(synthetic.TASKS) <= set(known_sources())
  for name, cls in synthetic.SOURCES.items():
    assert cls.name == name and cls.description and '\n' not in cls.description
  assert synthetic.SOURCES['stack'] is synthetic.Stack and synthetic.SOURCES['keys_values'] is synthetic.KeysValues
  with pytest.raises(ValueError, match="'copy' is already registered"):
    synthetic._task('copy', 'another copy')(type('Other', (), {}))
  assert synthetic.SOURCES['copy'] is synthetic.Copy


@pytest.mark.parametrize('name,opts', CASES, ids=IDS)
def test_batch_contract(name, opts):
  src = source(name, **opts)
  info = src.info
  assert info.seq_len == T and info.kind == 'synthetic'
  x, y = batch(src, rows=8)
  assert x.shape == y.shape == (8, T)
  assert x.dtype == np.int32 and y.dtype == np.int32
  assert x.min() >= -1 and x.max() < info.vocab_size
  assert y.min() >= -1 and y.max() < info.vocab_size
  assert (y >= 0).any(), 'every task has some targets'
  # Padding is a left prefix and carries no target.
  pad = x == -1
  assert (np.sort(pad, axis=1)[:, ::-1] == pad).all()
  assert (y[pad] == -1).all()
  assert isinstance(info.decode(x[0]), str)


@pytest.mark.parametrize('name,opts', CASES, ids=IDS)
def test_determinism_and_row_slicing(name, opts):
  src = source(name, **opts)
  full = src.get_batch('train', 3, 0, 8)
  again = source(name, **opts).get_batch('train', 3, 0, 8)  # a fresh source with the same seed
  parts = [src.get_batch('train', 3, 0, 3), src.get_batch('train', 3, 3, 8)]
  middle = src.get_batch('train', 3, 5, 7)
  for k in ('x', 'y'):
    np.testing.assert_array_equal(full[k], again[k])
    np.testing.assert_array_equal(full[k], np.concatenate([p[k] for p in parts]))
    np.testing.assert_array_equal(full[k][5:7], middle[k])
  assert src.get_batch('train', 3, 4, 4)['x'].shape == (0, T)
  # Different batch index, split or seed: different data. (Stacked x and y so parity-like tasks
  # with few tokens still differ.)
  def both(b):
    return np.concatenate([b['x'], b['y']])
  assert not np.array_equal(both(full), both(src.get_batch('train', 4, 0, 8)))
  assert not np.array_equal(both(full), both(src.get_batch('test', 3, 0, 8)))
  assert not np.array_equal(both(full), both(source(name, seed=1, **opts).get_batch('train', 3, 0, 8)))
  # Rows within a batch differ too.
  assert len({r.tobytes() for r in full['x']}) > 1


def test_bad_split_raises_and_valid_is_its_own_stream():
  with pytest.raises(DataError, match='split'):
    source('parity').get_batch('dev', 0, 0, 2)
  valid, test = (source('parity').get_batch(s, 0, 0, 8)['x'] for s in ('valid', 'test'))
  assert not np.array_equal(valid, test)


# --- per-task references --------------------------------------------------------------------------


def test_retrieval_reference():
  n = 6
  src = source('retrieval', num_symbols=n)
  MARKER, QUERY = n, n + 1
  assert src.info.vocab_size == n + 2
  x, y = batch(src, rows=256)
  for xr, yr in zip(x, y):
    assert (xr == MARKER).sum() == 1 and (xr == QUERY).sum() == 1 and xr[-1] == QUERY
    p = int(np.flatnonzero(xr == MARKER)[0])
    assert p < T // 2  # needle_region 0.5
    assert 0 <= xr[p + 1] < n
    assert yr[-1] == xr[p + 1]
    assert (yr[:-1] == -1).all()
  assert (x >= 0).all()  # no padding
  # The marker position is spread over the whole region, not stuck.
  ps = np.argmax(x == MARKER, axis=1)
  assert ps.min() == 0 and ps.max() == T // 2 - 1


def test_retrieval_region_and_short_sequence():
  x, _ = batch(source('retrieval', needle_region=1.0), rows=256)
  ps = np.argmax(x == 8, axis=1)
  assert ps.max() == T - 3  # the latest marker leaves room for the needle before QUERY
  x, y = batch(source('retrieval', seq_len=3), rows=16)
  assert (x[:, 0] == 8).all() and (x[:, 2] == 9).all() and (y[:, 2] == x[:, 1]).all()


@pytest.mark.parametrize('noise,expected', [(1.0, 1 / 8), (0.3, 0.7 + 0.3 / 8)])
def test_retrieval_label_noise(noise, expected):
  x, y = batch(source('retrieval', noise=noise), rows=4000)
  needle = x[np.arange(len(x)), np.argmax(x == 8, axis=1) + 1]
  agree = (y[:, -1] == needle).mean()
  assert abs(agree - expected) < 0.03, agree
  assert set(np.unique(y[:, -1])) == set(range(8))


@pytest.mark.parametrize('reverse', [True, False])
@pytest.mark.parametrize('M', [None, 1, 5])
def test_copy_reference(reverse, M):
  n = 5
  opts = {'num_symbols': n, 'reverse': reverse}
  if M is not None:
    opts['length'] = M
  src = source('copy', **opts)
  M = T // 2 if M is None else M
  SEP = n
  assert src.info.vocab_size == n + 1
  x, y = batch(src, rows=64)
  o = T - 2 * M
  for xr, yr in zip(x, y):
    assert (xr[:o] == -1).all()
    s = xr[o:o + M]
    assert ((0 <= s) & (s < n)).all()
    assert xr[o + M] == SEP and (xr == SEP).sum() == 1
    r = s[::-1] if reverse else s
    np.testing.assert_array_equal(yr[o + M:], r)
    assert (yr[:o + M] == -1).all()
    # Each r_j is the target right before it is input.
    np.testing.assert_array_equal(xr[o + M + 1:], yr[o + M:-1])


def test_stack_reference():
  n, D = 4, 3
  src = source('stack', num_symbols=n, max_depth=D)
  POP = n
  assert src.info.vocab_size == n + 1
  x, y = batch(src, rows=128)
  interior_pushes = interior_steps = 0
  max_seen = 0
  for xr, yr in zip(x, y):
    stack = []
    for xt, yt in zip(xr, yr):
      if 0 < len(stack) < D:
        interior_steps += 1
        interior_pushes += xt != POP
      if xt == POP:
        assert stack, 'pop from an empty stack'
        assert yt == stack.pop()
      else:
        assert 0 <= xt < n and len(stack) < D, 'push onto a full stack'
        assert yt == -1
        stack.append(int(xt))
      max_seen = max(max_seen, len(stack))
  assert max_seen == D
  assert abs(interior_pushes / interior_steps - 0.5) < 0.03  # fair coin inside the depth range
  assert set(np.unique(x)) == set(range(n + 1))


def test_stack_default_depth():
  x, y = batch(source('stack', seq_len=64), rows=64)
  depth = np.cumsum(np.where(x == 8, -1, 1), axis=1)
  assert depth.min() >= 0 and depth.max() == 5
  assert ((x == 8) == (y >= 0)).all()


def parse_keys_values(xr, k, kl, vl, n):
  """(pairs dict key->value, query key, expected y) from one row, by the layout in the brief."""
  L = (k + 1) * (kl + vl)
  o = len(xr) - L
  assert (xr[:o] == -1).all() and (xr[o:] >= 0).all()
  body = xr[o:o + k * (kl + vl)].reshape(k, kl + vl)
  assert (body < n).all()
  keys = [tuple(b[:kl]) for b in body]
  assert len(set(keys)) == k, 'keys must be distinct'
  table = dict(zip(keys, (tuple(b[kl:]) for b in body)))
  rest = xr[o + k * (kl + vl):]
  assert rest[0] == n  # QUERY
  qkey = tuple(rest[1:1 + kl])
  value = table[qkey]
  np.testing.assert_array_equal(rest[1 + kl:], value[:-1])
  y = np.full(len(xr), -1)
  y[len(xr) - vl:] = value
  return table, qkey, y


@pytest.mark.parametrize('k,kl,vl,n', [(4, 2, 1, 8), (3, 1, 3, 5), (8, 1, 1, 8), (5, 10, 2, 16)])
def test_keys_values_reference(k, kl, vl, n):
  src = source('keys_values', seq_len=max(T, (k + 1) * (kl + vl)), num_pairs=k, key_len=kl, value_len=vl,
               num_symbols=n)
  assert src.info.vocab_size == n + 1
  x, y = batch(src, rows=128)
  query_slots = []
  for xr, yr in zip(x, y):
    table, qkey, ey = parse_keys_values(xr, k, kl, vl, n)
    np.testing.assert_array_equal(yr, ey)
    query_slots.append(list(table).index(qkey))
  assert set(query_slots) == set(range(k))  # every pair gets queried
  if kl == 1 and k == n:  # all keys used: every row is a permutation, in varying order
    assert len({tuple(r[-2 * k - 2:-2:2]) for r in x}) > 50


def test_keys_values_keys_uniform():
  # 4 symbols, 2 one-token keys: all 12 ordered pairs of distinct keys equally likely.
  x, _ = batch(source('keys_values', num_pairs=2, key_len=1, num_symbols=4), rows=2400)
  pairs = x[:, -6] * 4 + x[:, -4]  # layout [k1 v1 k2 v2 ? kq]
  counts = np.bincount(pairs, minlength=16)
  assert (counts[[0, 5, 10, 15]] == 0).all()
  assert np.abs(np.delete(counts, [0, 5, 10, 15]) - 200).max() < 60, counts


def test_modular_reference():
  P = 7
  src = source('modular', modulus=P, num_examples=6)
  assert src.info.vocab_size == P
  x, y = batch(src, rows=128)
  o = T - 12
  assert (x[:, :o] == -1).all()
  a, f = x[:, o::2], x[:, o + 1::2]
  np.testing.assert_array_equal(y[:, o::2], f)
  assert (y[:, :o] == -1).all() and (y[:, o + 1::2] == -1).all()
  ws, bs = np.meshgrid(np.arange(1, P), np.arange(P), indexing='ij')
  found_w = set()
  for ar, fr in zip(a, f):
    ok = ((ws[..., None] * ar + bs[..., None]) % P == fr).all(-1)  # [w, b]: consistent with all pairs
    assert ok.any(), 'no hidden (w, b) with w in [1, P) explains the row'
    if len(set(ar.tolist())) >= 2:  # two distinct inputs pin (w, b) down (P prime)
      assert ok.sum() == 1
      found_w.add(int(ws[ok][0]))
  assert found_w == set(range(1, P))


def test_modular_narrowed_w_and_b():
  P = 7
  x, y = batch(source('modular', modulus=P, num_examples=6, num_w=1, num_b=3), rows=256)
  o = T - 12
  a, f = x[:, o::2], x[:, o + 1::2]
  b = (f - a) % P  # w = 1: f = a + b
  assert (b == b[:, :1]).all()  # one hidden offset per row
  assert set(b[:, 0].tolist()) == {0, 1, 2}
  x2, _ = batch(source('modular', modulus=P, num_examples=6, num_w=2), rows=256)
  a2, f2 = x2[:, o::2], x2[:, o + 1::2]

  def explained(w):  # rows whose pairs share one offset b for this w
    b = (f2 - w * a2) % P
    return (b == b[:, :1]).all(axis=1)
  assert (explained(1) | explained(2)).all()
  assert explained(1).mean() > 0.3 and explained(2).mean() > 0.3 and not explained(3).any()


def test_modular_default_fills_sequence():
  x, y = batch(source('modular', seq_len=33), rows=8)
  assert (x[:, 0] == -1).all() and (x[:, 1:] >= 0).all()
  assert (x < 17).all() and (y[:, 1::2] >= 0).all() and (y[:, 2::2] == -1).all()


def test_parity_reference():
  src = source('parity')
  assert src.info.vocab_size == 2
  x, y = batch(src, rows=64)
  assert set(np.unique(x)) == {0, 1}
  np.testing.assert_array_equal(y, np.bitwise_xor.accumulate(x, axis=1))
  assert abs(x.mean() - 0.5) < 0.05


def test_counting_reference():
  src = source('counting', modulus=4)
  x, y = batch(src, rows=64)
  assert src.info.vocab_size == 4 and set(np.unique(x)) == {0, 1, 2, 3}
  np.testing.assert_array_equal(y, np.cumsum(x, axis=1) % 4)
  xs, ys = batch(source('counting', modulus=4, targets='last'), rows=64)
  np.testing.assert_array_equal(xs, x)  # the same sequences, one target each
  assert (ys[:, :-1] == -1).all()
  np.testing.assert_array_equal(ys[:, -1], y[:, -1])
  with pytest.raises(DataError, match='targets'):
    source('counting', targets='first')


def test_copy_default_length_fills_sequence():
  x, y = batch(source('copy'), rows=4)
  assert (x >= 0).all() and (x[:, T // 2] == 8).all()


def test_decode():
  src = source('retrieval', num_symbols=3, seq_len=5)
  assert src.info.decode(np.array([0, 3, 2, 1, 4])) == '0 # 2 1 ?'
  assert source('copy', seq_len=4, length=1).info.decode(np.array([-1, -1, 0, 8])) == '_ _ 0 |'


# --- errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize('name,opts,field', [
    ('retrieval', {'num_symbols': 0}, 'config.data.options.num_symbols'),
    ('retrieval', {'num_symbols': 2.5}, 'config.data.options.num_symbols'),
    ('retrieval', {'noise': 1.5}, 'config.data.options.noise'),
    ('retrieval', {'noise': -0.1}, 'config.data.options.noise'),
    ('retrieval', {'needle_region': 0.0}, 'config.data.options.needle_region'),
    ('copy', {'length': T // 2 + 1}, 'config.data.options.length'),
    ('copy', {'length': 0}, 'config.data.options.length'),
    ('copy', {'reverse': 'yes'}, 'config.data.options.reverse'),
    ('copy', {'num_symbols': -3}, 'config.data.options.num_symbols'),
    ('stack', {'max_depth': 0}, 'config.data.options.max_depth'),
    ('stack', {'num_symbols': True}, 'config.data.options.num_symbols'),
    ('keys_values', {'num_pairs': 10}, 'config.data.options.num_pairs'),  # 11 * 3 > 32 tokens
    ('keys_values', {'num_pairs': 9, 'key_len': 1}, 'config.data.options.num_pairs'),  # only 8 keys
    ('keys_values', {'value_len': 0}, 'config.data.options.value_len'),
    ('keys_values', {'key_len': 0}, 'config.data.options.key_len'),
    ('modular', {'modulus': 1}, 'config.data.options.modulus'),
    ('modular', {'num_examples': T // 2 + 1}, 'config.data.options.num_examples'),
    ('modular', {'num_examples': 0}, 'config.data.options.num_examples'),
    ('modular', {'modulus': 5, 'num_w': 5}, 'config.data.options.num_w'),
    ('modular', {'modulus': 5, 'num_b': 6}, 'config.data.options.num_b'),
    ('modular', {'num_w': 0}, 'config.data.options.num_w'),
])
def test_bad_options(name, opts, field):
  with pytest.raises(DataError, match=field):
    source(name, **opts)


@pytest.mark.parametrize('name', synthetic.TASKS)
def test_unknown_option(name):
  with pytest.raises(DataError, match='config.data.options.bogus'):
    source(name, bogus=1)


@pytest.mark.parametrize('name,seq_len', [('retrieval', 2), ('parity', 1), ('copy', 0), ('stack', -4)])
def test_bad_seq_len(name, seq_len):
  with pytest.raises(DataError, match='config.data.seq_len'):
    source(name, seq_len=seq_len)


def test_keys_values_fits_exactly():
  x, y = batch(source('keys_values', num_pairs=7), rows=4)  # (7+1) * 3 = 24 <= 32
  x, y = batch(source('keys_values', num_pairs=9, seq_len=30), rows=4)  # (9+1) * 3 = 30: no padding
  assert (x >= 0).all()



def test_tasks_carry_their_own_length_semantics():
  """A study's length is T for every task but keys_values, whose length is its number of pairs (T follows, and
  longer test sequences would only add padding); a file source's is its T."""
  kv = default_config().data
  kv.name, kv.seq_len, kv.options = 'keys_values', 15, {'num_pairs': 4, 'key_len': 2, 'value_len': 1}
  assert synthetic.swept_length(kv) == 4 and synthetic.length_is('keys_values') == 'num_pairs'
  synthetic.resize(kv, 6)
  assert (kv.options.num_pairs, kv.seq_len) == (6, 21)
  batch(make_source(kv, 0), rows=2)  # exactly long enough for its pairs and the query
  assert not synthetic.longer_tests('keys_values') and synthetic.longer_tests('copy')
  for name in ('copy', 'tinystories'):
    d = default_config().data
    d.name, d.seq_len = name, 12
    synthetic.resize(d, 20)
    assert synthetic.swept_length(d) == d.seq_len == 20 and synthetic.length_is(name) == 'seq_len'
