"""Tests for the real-data sources (smtjax.data.real), the grain BatchIterator and data visualisation.

The shared datasets are read from $SMTJAX_SHARED_DATA, else <repo>/../shared/data; tests that need them
are skipped when they are missing. Every cache is built under tmp_path, and bad inputs are made there too.
"""

import gzip
import importlib.util
import json
import os
import pathlib
import struct
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # plain `pytest tests/...` without an installed package
  sys.path.insert(0, str(ROOT))

import ml_collections  # noqa: E402

from smtjax.config import validate  # noqa: E402
from smtjax.data import (  # noqa: E402  # noqa: E402
  DataError,
  download,
  images,
  known_sources,  # noqa: E402
  make_source,
  real,
  stream,
  text,
)
from smtjax.data.pipeline import BatchIterator  # noqa: E402
from smtjax.data.visualize import batch_to_text, save_image_grid  # noqa: E402

SHARED = pathlib.Path(os.environ.get('SMTJAX_SHARED_DATA') or ROOT.parent / 'shared' / 'data')


def shared(*parts) -> pathlib.Path:
  p = SHARED.joinpath(*parts)
  if not p.exists():
    pytest.skip(f'shared data {p} not found (set SMTJAX_SHARED_DATA)')
  return p


@pytest.fixture(autouse=True)
def _no_home_cache(tmp_path, monkeypatch):
  """Nothing a test does may write to ~/.cache or find data through the caller's environment."""
  monkeypatch.setenv('SMTJAX_CACHE', str(tmp_path / 'env-cache'))
  monkeypatch.delenv('SMTJAX_DATA_DIR', raising=False)


@pytest.fixture(scope='module')
def cache(tmp_path_factory) -> str:
  return str(tmp_path_factory.mktemp('cache'))


def data_config(name, path='', seq_len=32, **options):
  return ml_collections.ConfigDict(dict(name=name, seq_len=seq_len, path=str(path), source='files',
                                          valid_fraction=0.0, options=options))


@pytest.fixture(scope='module')
def tinystories(cache):
  return make_source(data_config('tinystories', shared('tinystories'), 64, cache_dir=cache), seed=0)


@pytest.fixture(scope='module')
def mnist(cache):
  return make_source(data_config('mnist', shared('mnist'), 320, cache_dir=cache), seed=0)


@pytest.fixture(scope='module')
def sketch(cache):
  return make_source(data_config('sketch', shared('sketch'), 784, cache_dir=cache), seed=0)


def ascii_of(path) -> bytes:
  b = np.frombuffer(pathlib.Path(path).read_bytes().replace(b'<|endoftext|>', b''), np.uint8)
  return b[b < 128].tobytes()


def check_alignment(b, rows, T):
  assert b['x'].shape == b['y'].shape == (rows, T)
  assert b['x'].dtype == b['y'].dtype == np.int32
  np.testing.assert_array_equal(b['y'][:, :-1], b['x'][:, 1:])


# ------------------------------------------------------------------------------------ tokenisers

def test_registered():
  assert {'tinystories', 'mnist', 'sketch', 'tokens', 'arrays'} <= set(known_sources())


def test_text_tokeniser_round_trip():
  s = 'Once upon a time, Lily said: "Hi!"\n\tThe end. 0123 ~{}|'
  t = text.encode_text(s)
  assert t.dtype == np.uint8 and len(t) == len(s)
  assert text.decode_text(t) == s
  assert text.decode_text(np.r_[t.astype(np.int32), -1, -1]) == s  # padding is skipped


def test_text_tokeniser_drops_non_ascii():
  assert text.decode_text(text.encode_text('caf\u00e9 \u201cok\u201d \u2014 \U0001F600!')) == 'caf ok  !'


def test_image_tokeniser_round_trip():
  imgs = np.random.default_rng(0).integers(0, 256, (3, 5, 7)).astype(np.uint8)
  t = images.encode_images(imgs)
  assert t.shape == (105,) and t.dtype == np.uint8
  assert t[7] == imgs[0, 1, 0] and t[35] == imgs[1, 0, 0]  # raster order, image after image
  for i in range(3):
    np.testing.assert_array_equal(images.decode_image(t[35 * i:35 * (i + 1)], (5, 7)), imgs[i])
  part = images.decode_image(np.r_[t[:10].astype(np.int32), -1], (5, 7))  # a partial image: zero-padded rows
  assert part.shape == (2, 7) and (part.reshape(-1)[:10] == t[:10]).all() and (part.reshape(-1)[10:] == 0).all()
  with pytest.raises(DataError, match='0, 255'):
    images.encode_images(np.array([[300]]))


# ------------------------------------------------------------------------------------------ IDX

def test_idx_parsing():
  d = shared('mnist')
  train = images.read_idx(d / 'train-images-idx3-ubyte.gz')
  assert train.shape == (60000, 28, 28) and train.dtype == np.uint8
  labels = images.read_idx(d / 'train-labels-idx1-ubyte.gz')
  assert labels.shape == (60000,) and list(labels[:5]) == [5, 0, 4, 1, 9]
  assert images.idx_shape(d / 't10k-images-idx3-ubyte.gz') == (10000, 28, 28)
  assert list(images.read_idx(d / 't10k-labels-idx1-ubyte.gz')[:3]) == [7, 2, 1]


def test_idx_uncompressed_and_errors(tmp_path):
  a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
  raw = struct.pack('>4B3I', 0, 0, 8, 3, 2, 3, 4) + a.tobytes()
  (tmp_path / 'ok-idx3-ubyte').write_bytes(raw)
  np.testing.assert_array_equal(images.read_idx(tmp_path / 'ok-idx3-ubyte'), a)
  gz = tmp_path / 'ok.gz'
  gz.write_bytes(gzip.compress(raw))
  np.testing.assert_array_equal(images.read_idx(gz), a)

  bad = tmp_path / 'short-data-idx3-ubyte.gz'
  bad.write_bytes(gzip.compress(raw[:-5]))
  with pytest.raises(DataError, match=r'short-data-idx3-ubyte\.gz.*truncated IDX'):
    images.read_idx(bad)
  cut = tmp_path / 'cut.gz'  # a gzip stream cut short
  cut.write_bytes(gzip.compress(raw)[:20])
  with pytest.raises(DataError, match=r'cut\.gz.*truncated or corrupt gzip'):
    images.read_idx(cut)
  magic = tmp_path / 'magic.gz'
  magic.write_bytes(gzip.compress(b'\x89PNG' + raw[4:]))
  with pytest.raises(DataError, match=r'magic\.gz: wrong magic number 0x89504e47'):
    images.read_idx(magic)


def test_mnist_truncated_real_file(tmp_path):
  src = (shared('mnist') / 'train-images-idx3-ubyte.gz').read_bytes()
  d = tmp_path / 'mnist'
  d.mkdir()
  (d / 'train-images-idx3-ubyte.gz').write_bytes(src[:100_000])
  (d / 't10k-images-idx3-ubyte.gz').write_bytes(src[:100_000])
  with pytest.raises(DataError, match=r'train-images-idx3-ubyte\.gz: truncated or corrupt gzip'):
    make_source(data_config('mnist', d, cache_dir=str(tmp_path / 'c')), 0)
  (d / 'train-images-idx3-ubyte.gz').write_bytes(gzip.compress(struct.pack('>4BI', 0, 0, 8, 1, 8) + bytes(8)))  # labels
  with pytest.raises(DataError, match=r'expected uint8 images \[N, H, W\]'):
    make_source(data_config('mnist', d, cache_dir=str(tmp_path / 'c')), 0)


# ------------------------------------------------------------------------------------ the sources

def test_tinystories_windows(tinystories):
  info = tinystories.info
  assert (info.vocab_size, info.seq_len, info.kind) == (256, 64, 'text')
  b = tinystories.get_batch('train', 3, 0, 16)
  check_alignment(b, 16, 64)
  assert b['x'].min() >= 0 and b['x'].max() < 128
  train = ascii_of(shared('tinystories', 'TinyStories-train.first-2MiB.txt'))
  valid = ascii_of(shared('tinystories', 'TinyStories-valid.prefix-hf-rows.txt'))
  for row in b['x']:
    assert row.astype(np.uint8).tobytes() in train
  for row in tinystories.get_batch('test', 0, 0, 8)['x']:  # the *valid* file is the test split
    w = row.astype(np.uint8).tobytes()
    assert w in valid and w not in train
  assert tinystories.num_tokens('train') == len(train) and tinystories.num_tokens('test') == len(valid)


def test_text_file_tail_split_and_endoftext(tmp_path):
  f = tmp_path / 'stories.txt'
  stories = [f'Story {i}: ' + 'la ' * (i % 7 + 3) + '\u201cend\u201d.' for i in range(400)]
  f.write_text('\n<|endoftext|>\n'.join(stories) + '\n<|endoftext|>\n')
  src = make_source(data_config('tinystories', f, 16, cache_dir=str(tmp_path / 'c')), 0)
  stream_ = ('\n\n'.join(s.replace('\u201c', '').replace('\u201d', '') for s in stories) + '\n\n').encode()
  total = len(stream_)
  assert src.num_tokens('train') + src.num_tokens('test') == total
  assert src.num_tokens('test') == int(np.ceil(0.01 * total))
  cut = src.num_tokens('train')
  for split, lo, hi in (('train', 0, cut), ('test', cut, total)):
    for r in range(64):  # every window lies inside its own part of the stream: no overlap
      seg, start = src.window_start(split, 0, r)
      assert seg == 0 and lo <= lo + start and lo + start + 17 <= hi
    b = src.get_batch(split, 0, 0, 64)
    for r, row in enumerate(b['x']):
      assert row.astype(np.uint8).tobytes() == stream_[lo + src.window_start(split, 0, r)[1]:][:16]


def test_mnist_windows(mnist):
  info = mnist.info
  assert (info.vocab_size, info.kind, info.image_shape) == (256, 'image', (28, 28))
  assert mnist.num_tokens('train') == 60000 * 784 and mnist.num_tokens('test') == 10000 * 784
  b = mnist.get_batch('train', 0, 0, 8)
  check_alignment(b, 8, 320)
  pixels = images.read_idx(shared('mnist', 'train-images-idx3-ubyte.gz')).reshape(-1)
  for r in range(8):
    _, start = mnist.window_start('train', 0, r)
    np.testing.assert_array_equal(b['x'][r], pixels[start:start + 320])
    np.testing.assert_array_equal(b['y'][r], pixels[start + 1:start + 321])


def test_sketch_holds_out_last_tenth(sketch):
  info = sketch.info
  assert (info.vocab_size, info.kind, info.image_shape, info.seq_len) == (256, 'image', (28, 28), 784)
  files = sorted(shared('sketch').rglob('*.npy'))
  assert sketch.num_tokens('train') == len(files) * 2700 * 784
  assert sketch.num_tokens('test') == len(files) * 300 * 784
  b = sketch.get_batch('test', 0, 0, 4)
  check_alignment(b, 4, 784)
  for r in range(4):
    seg, start = sketch.window_start('test', 0, r)
    held_out = np.load(files[seg], mmap_mode='r').reshape(-1)[2700 * 784:]
    np.testing.assert_array_equal(b['x'][r], held_out[start:start + 784])


def test_tokens_source(tmp_path):
  toks = np.random.default_rng(0).integers(0, 1000, 5000).astype(np.int32)
  np.save(tmp_path / 's.npy', toks)
  src = make_source(data_config('tokens', tmp_path / 's.npy', 20), 0)
  assert src.info.vocab_size == toks.max() + 1
  b = src.get_batch('train', 0, 0, 8)
  check_alignment(b, 8, 20)
  _, start = src.window_start('train', 0, 0)
  np.testing.assert_array_equal(b['x'][0], toks[start:start + 20])
  src = make_source(data_config('tokens', tmp_path / 's.npy', 20, vocab_size=1024), 0)
  assert src.info.vocab_size == 1024
  assert src.info.decode(np.array([3, -1, 7])) == '3 7'


def test_arrays_source(tmp_path):
  rng = np.random.default_rng(0)
  x = rng.integers(0, 10, (50, 12))
  y = np.where(rng.random((50, 12)) < 0.5, -1, rng.integers(0, 10, (50, 12)))
  np.savez(tmp_path / 'xy.npz', x=x, y=y)
  src = make_source(data_config('arrays', tmp_path / 'xy.npz', 12), 0)
  assert src.info.vocab_size == 10
  b = src.get_batch('train', 0, 0, 16)
  assert b['x'].shape == (16, 12) and b['x'].dtype == np.int32
  for bx, by in zip(b['x'], b['y']):  # each row is one of the first 45 (train) examples, with its own y
    i = np.flatnonzero((x[:45] == bx).all(1))
    assert len(i) and (y[i[0]] == by).all()
  t = src.get_batch('test', 0, 0, 16)
  assert all(((x[45:] == r).all(1)).any() for r in t['x'])
  np.savez(tmp_path / 'x.npz', x=x)  # no y: next-token targets, none at the last step
  b = make_source(data_config('arrays', tmp_path / 'x.npz', 12), 0).get_batch('train', 0, 0, 4)
  np.testing.assert_array_equal(b['y'][:, :-1], b['x'][:, 1:])
  assert (b['y'][:, -1] == -1).all()


# ------------------------------------------------------------------------------ determinism, iterator

def test_batches_are_pure_functions_of_seed_index_row(tinystories, cache):
  a = tinystories.get_batch('train', 5, 0, 8)
  again = make_source(data_config('tinystories', shared('tinystories'), 64, cache_dir=cache), seed=0)
  np.testing.assert_array_equal(again.get_batch('train', 5, 0, 8)['x'], a['x'])
  np.testing.assert_array_equal(tinystories.get_batch('train', 5, 2, 5)['x'], a['x'][2:5])
  other = make_source(data_config('tinystories', shared('tinystories'), 64, cache_dir=cache), seed=1)
  assert not np.array_equal(other.get_batch('train', 5, 0, 8)['x'], a['x'])
  assert not np.array_equal(tinystories.get_batch('train', 6, 0, 8)['x'], a['x'])


@pytest.mark.parametrize('prefetch', [0, 2])
def test_iterator_resume_replays_exactly(mnist, prefetch):
  it = BatchIterator(mnist, 'train', 8, prefetch=prefetch)
  first = [next(it) for _ in range(3)]
  state = it.get_state()
  assert json.loads(json.dumps(state)) == state == {'index': 3}
  more = [next(it) for _ in range(2)]
  fresh = BatchIterator(mnist, 'train', 8, prefetch=prefetch)
  fresh.set_state(json.loads(json.dumps(state)))
  for a, b in zip(more, [next(fresh) for _ in range(2)]):
    np.testing.assert_array_equal(a['x'], b['x'])
    np.testing.assert_array_equal(a['y'], b['y'])
  np.testing.assert_array_equal(first[0]['x'], mnist.get_batch('train', 0, 0, 8)['x'])
  assert not np.array_equal(first[0]['x'], first[1]['x'])
  started = BatchIterator(mnist, 'train', 8, start_index=3, prefetch=prefetch)
  np.testing.assert_array_equal(next(started)['x'], more[0]['x'])


def test_per_process_sharding(tinystories):
  whole = next(BatchIterator(tinystories, 'train', 8))
  parts = [next(BatchIterator(tinystories, 'train', 8, process_index=p, process_count=2)) for p in range(2)]
  assert parts[0]['x'].shape == (4, 64)
  rows0 = {r.tobytes() for r in parts[0]['x']}
  assert not rows0 & {r.tobytes() for r in parts[1]['x']}  # disjoint windows
  for k in ('x', 'y'):
    np.testing.assert_array_equal(np.concatenate([parts[0][k], parts[1][k]]), whole[k])
  with pytest.raises(ValueError, match='divisible'):
    BatchIterator(tinystories, 'train', 7, process_count=2)


# ----------------------------------------------------------------------------------------- cache

def test_cache_built_once_and_keyed_by_file(tmp_path, monkeypatch):
  f = tmp_path / 'a.txt'
  f.write_text('hello world, this is a tiny story. ' * 60)
  c = tmp_path / 'c'
  make_source(data_config('tinystories', f, 16, cache_dir=str(c)), 0)
  built = sorted((c / 'tokens').iterdir())
  assert len(built) == 1 and built[0].suffix == '.bin' and built[0].stat().st_size == len(f.read_text())
  with monkeypatch.context() as m:
    m.setattr(text, 'tokenize_text_file', lambda *a: pytest.fail('the cache was rebuilt'))
    make_source(data_config('tinystories', f, 16, cache_dir=str(c)), 0)
  f.write_text('another story, a little longer than the first one. ' * 60)
  src = make_source(data_config('tinystories', f, 16, cache_dir=str(c)), 0)
  assert len(list((c / 'tokens').iterdir())) == 2
  assert src.num_tokens('train') + src.num_tokens('test') == len(f.read_text())
  assert stream.cache_root('') == tmp_path / 'env-cache'  # $SMTJAX_CACHE (set by the autouse fixture)


# ---------------------------------------------------------------------------------------- errors

def test_missing_path(tmp_path):
  for name in ('tinystories', 'mnist', 'sketch', 'tokens', 'arrays'):
    with pytest.raises(DataError, match=f'config.data.path: {tmp_path / "nope"} does not exist'):
      make_source(data_config(name, tmp_path / 'nope'), 0)


def test_no_data_offline(tmp_path, monkeypatch):
  empty = tmp_path / 'no-cache-here'
  for name in ('tinystories', 'mnist', 'sketch'):
    with pytest.raises(DataError, match=rf'no data found at {empty / name}.*--config\.data\.path='):
      make_source(data_config(name, '', cache_dir=str(empty), download=False), 0)
  # With downloads on but the network unreachable, the download fails fast and says how to provide the data.
  monkeypatch.setattr(download, 'TINYSTORIES_URL', 'http://127.0.0.1:9/')
  monkeypatch.setattr(download, 'MNIST_URLS', ('http://127.0.0.1:9/',))
  for name in ('tinystories', 'mnist'):
    with pytest.raises(DataError, match=rf'{empty / name}.*failed.*--config\.data\.path='):
      make_source(data_config(name, '', cache_dir=str(empty), download_timeout=2.0), 0)
    assert not list((empty / name).glob('*')) if (empty / name).exists() else True  # no partial files


def test_bad_text_files(tmp_path):
  cases = {'empty.txt': b'', 'binary.txt': b'\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR',
           'latin1.txt': 'caf\u00e9 au lait'.encode('latin-1'), 'only-unicode.txt': '\u201c\u201d\u2014'.encode()}
  messages = {'empty.txt': 'empty', 'binary.txt': 'not a text file', 'latin1.txt': 'not a UTF-8 text file',
              'only-unicode.txt': 'no ASCII text'}
  for name, data in cases.items():
    (tmp_path / name).write_bytes(data)
    with pytest.raises(DataError, match=rf'{name}: .*{messages[name]}'):
      make_source(data_config('tinystories', tmp_path / name, cache_dir=str(tmp_path / 'c')), 0)
  assert not list((tmp_path / 'c' / 'tokens').glob('*.tmp'))  # failed builds leave nothing behind


def test_bad_npz_and_vocab(tmp_path):
  np.savez(tmp_path / 'nox.npz', inputs=np.zeros((4, 8), np.int32))
  with pytest.raises(DataError, match=r'nox\.npz: no array named "x"'):
    make_source(data_config('arrays', tmp_path / 'nox.npz', 8), 0)
  np.savez(tmp_path / 'big.npz', x=np.full((4, 8), 20))
  with pytest.raises(DataError, match=r'big\.npz: x has token 20 at position \(0, 0\), outside the vocabulary'):
    make_source(data_config('arrays', tmp_path / 'big.npz', 8, vocab_size=16), 0)
  np.savez(tmp_path / 'neg.npz', x=np.zeros((4, 8), np.int32), y=np.full((4, 8), -3))
  with pytest.raises(DataError, match=r'neg\.npz: y has token -3'):
    make_source(data_config('arrays', tmp_path / 'neg.npz', 8), 0)
  with pytest.raises(DataError, match=r'big\.npz: x holds sequences of length 8, but config.data.seq_len is 5'):
    make_source(data_config('arrays', tmp_path / 'big.npz', 5), 0)
  np.save(tmp_path / 'toks.npy', np.array([1, 2, 3, 300, 4] * 10))
  with pytest.raises(DataError, match=r'toks\.npy: the stream has token 300 at position 3, outside .* \[0, 256\)'):
    make_source(data_config('tokens', tmp_path / 'toks.npy', 8, vocab_size=256), 0)
  np.save(tmp_path / 'neg.npy', np.array([1, -1, 3] * 10))
  with pytest.raises(DataError, match=r'neg\.npy: the stream has token -1 at position 1'):
    make_source(data_config('tokens', tmp_path / 'neg.npy', 8), 0)
  (tmp_path / 'junk.npy').write_bytes(b'not numpy')
  with pytest.raises(DataError, match=r'junk\.npy: not a readable \.npy'):
    make_source(data_config('tokens', tmp_path / 'junk.npy', 8), 0)
  with pytest.raises(DataError, match=r'junk\.npy: not a readable \.npy'):
    make_source(data_config('sketch', tmp_path / 'junk.npy', 8), 0)


def test_bad_options_and_lengths(tmp_path):
  f = tmp_path / 's.txt'
  f.write_text('short')
  with pytest.raises(DataError, match='config.data.options.colour: unknown option'):
    make_source(data_config('tinystories', f, colour=1), 0)
  with pytest.raises(DataError, match='seq_len\\+1 = 33 tokens'):
    make_source(data_config('tinystories', f, 32, cache_dir=str(tmp_path / 'c')), 0)


# ------------------------------------------------------------------------------- configs, visualise

def load_config(name):
  spec = importlib.util.spec_from_file_location(f'configs_{name}', ROOT / 'configs' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize('name', ['tinystories', 'mnist', 'sketch'])
def test_configs(name, cache):
  module = load_config(name)
  c = module.get_config()
  validate(c)
  assert (c.data.name, c.model.vocab_size, c.model.d_model, c.model.num_mem_tokens, c.model.num_heads) == \
      (name, 256, 256, 16, 8)
  assert (c.model.enc_depth, c.model.dec_depth, c.model.cell, c.model.cell_depth, c.model.dtype) == \
      (8, 4, 'transformer', 8, 'bfloat16')
  assert (c.smt.mode, c.smt.future, c.batch_size, c.num_steps, c.optim.lr) == ('window', 64, 128, 150_000, 3e-4)
  assert c.data.seq_len == (784 if name == 'sketch' else 320) == c.smt.context + c.smt.future
  small = module.get_config('small')
  validate(small)
  assert small.model.dtype == 'float32' and small.batch_size <= 16
  with pytest.raises(ValueError, match="'small'"):
    module.get_config('huge')
  small.data.path = str(shared(name))
  small.data.options.cache_dir = cache
  src = make_source(small.data, small.seed)
  validate(small, data_vocab_size=src.info.vocab_size)
  check_alignment(src.get_batch('train', 0, 0, 2), 2, small.data.seq_len)


def test_visualize(tinystories, mnist, tmp_path):
  x = tinystories.get_batch('train', 0, 0, 3)['x']
  texts = batch_to_text(tinystories.info, x)
  assert len(texts) == 3 and all(len(t) == 64 for t in texts) and texts[0] == text.decode_text(x[0])
  out = save_image_grid(mnist.info, mnist.get_batch('train', 0, 0, 4)['x'], tmp_path / 'grid.png', scale=2)
  data = out.read_bytes()
  assert data[:8] == b'\x89PNG\r\n\x1a\n'
  w, h = struct.unpack('>II', data[16:24])
  rows = -(-320 // 28)
  assert (w, h) == (2 * (28 * 2 + 1) + 1, 2 * (rows * 2 + 1) + 1)
  import matplotlib.image
  img = matplotlib.image.imread(out)
  assert img.shape == (h, w, 3)
  first = mnist.get_batch('train', 0, 0, 1)['x'][0]
  np.testing.assert_allclose(img[1, 1:57:2, 0] * 255, first[:28], atol=0.5)  # the first pixel row of tile 0
  assert real.decode_image is images.decode_image
