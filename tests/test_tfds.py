"""MNIST and Quick, Draw! through tfds.data_source (--config.data.source=tfds), on TFDS's mock data: no
download, no TensorFlow."""

import pathlib

import numpy as np
import pytest

tfds = pytest.importorskip('tensorflow_datasets')

from smtjax import config as config_lib  # noqa: E402
from smtjax import train  # noqa: E402
from smtjax.data import DataError, make_source  # noqa: E402
from smtjax.data.pipeline import BatchIterator  # noqa: E402
from smtjax.metrics import read_metrics  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def mock_tfds():
  with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
    yield


def _config(name, T=64):
  c = config_lib.load_config(f'{ROOT}/configs/{"mnist" if name == "mnist" else "sketch"}.py:small')
  c.data.source = 'tfds'
  c.data.seq_len = T
  return c


def _stream(dataset, split):
  ds = tfds.data_source(dataset, split=split)
  return np.concatenate([np.asarray(ds[i]['image']).reshape(-1) for i in range(len(ds))]).astype(np.int32)


@pytest.mark.parametrize('name,dataset', [('mnist', 'mnist'), ('sketch', 'quickdraw_bitmap')])
def test_tfds_windows_are_slices_of_the_image_stream(mock_tfds, name, dataset):
  """Every row is T+1 consecutive pixels of the split's images in raster order (crossing borders)."""
  T = 1000  # longer than one 784-pixel image: every window crosses at least one border
  src = make_source(_config(name, T).data, 0)
  assert src.info.image_shape == (28, 28) and src.info.vocab_size == 256 and src.info.kind == 'image'
  for split, tfds_split in (('train', 'train'), ('test', 'test' if name == 'mnist' else 'train')):
    pixels = _stream(dataset, tfds_split)
    b = src.get_batch(split, 3, 0, 8)
    assert b['x'].shape == (8, T) and b['x'].dtype == np.int32
    np.testing.assert_array_equal(b['x'][:, 1:], b['y'][:, :-1])
    for x, y in zip(b['x'], b['y']):
      w = np.concatenate([x, y[-1:]])
      starts = [s for s in range(len(pixels) - T) if pixels[s] == w[0] and (pixels[s:s + T + 1] == w).all()]
      assert starts, 'window is not a slice of the stream'


def test_tfds_rows_are_pure_and_sharded_per_process(mock_tfds):
  src = make_source(_config('mnist').data, 0)
  full = src.get_batch('train', 5, 0, 8)
  np.testing.assert_array_equal(full['x'], make_source(_config('mnist').data, 0).get_batch('train', 5, 0, 8)['x'])
  halves = [next(BatchIterator(src, 'train', 8, p, 2, start_index=5, prefetch=0)) for p in range(2)]
  np.testing.assert_array_equal(np.concatenate([h['x'] for h in halves]), full['x'])
  assert not np.array_equal(full['x'], src.get_batch('train', 6, 0, 8)['x'])


def test_tfds_route_errors(mock_tfds, tmp_path):
  c = _config('sketch')
  c.data.options.categories = 'cat'
  with pytest.raises(DataError, match='config.data.options.categories'):
    make_source(c.data, 0)
  c = _config('mnist')
  c.data.name = 'tinystories'
  with pytest.raises(DataError, match='config.data.source: tfds serves'):
    make_source(c.data, 0)
  c = _config('mnist')
  c.data.source = 'nope'
  with pytest.raises(DataError, match='config.data.source'):
    make_source(c.data, 0)


def test_tfds_not_prepared_is_a_data_error(tmp_path):
  c = _config('mnist')
  c.data.path = str(tmp_path)
  c.data.options.download = False
  with pytest.raises(DataError, match='tfds build mnist --file_format=array_record'):
    make_source(c.data, 0)


def test_mnist_trains_through_tfds(mock_tfds, tmp_path):
  c = _config('mnist', T=16)
  c.smt.context, c.smt.future = 12, 4
  c.model.d_model, c.model.num_heads, c.model.num_mem_tokens = 16, 2, 2
  c.model.enc_depth = c.model.dec_depth = c.model.cell_depth = 1
  c.batch_size, c.num_steps, c.log_every, c.eval_every, c.checkpoint_every = 4, 4, 2, 4, 4
  c.num_eval_batches, c.progress_bar = 1, False
  final = train.train_and_evaluate(c, str(tmp_path))
  assert np.isfinite(final['loss_test'])
  assert [r['step'] for r in read_metrics(tmp_path)] == [2, 4]
