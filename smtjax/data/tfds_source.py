"""MNIST and Quick, Draw! bitmaps through TensorFlow Datasets: `--config.data.source=tfds`.

    python -m experiments.run --config=configs/mnist.py --config.data.source=tfds --config.data.path=DATA_DIR

`tfds.data_source(name, split, data_dir=config.data.path or TFDS's default)` opens the prepared
ArrayRecord files for random access (no TensorFlow needed to read them). Training sequences are the same
as the file route's (smtjax/data/images.py): each image is its 784 raster-order pixels, the images of a
split are one stream, and a row is a random window of T+1 pixels of it (crossing image borders), drawn by
`row_rng(seed, split, index, row)`. A row reads only the records its window covers, so each host of a
multi-host run reads only its own rows of every global batch (`pipeline.BatchIterator`, on grain) and
the batches are the same whatever the number of hosts.

| data.name | TFDS dataset        | train split       | test split                                   |
| --------- | ------------------- | ----------------- | -------------------------------------------- |
| `mnist`   | `mnist`             | `train`           | `test`                                       |
| `sketch`  | `quickdraw_bitmap`  | `train[:90%]`     | `train[90%:]` (options.test_fraction = 0.1)   |

The data must be prepared in the ArrayRecord format (`tfds build mnist --file_format=array_record`, or
`options.download=True`, which runs TFDS's download and preparation: that step needs network access, and
TFDS may need TensorFlow for it). `quickdraw_bitmap` mixes all 345 categories, so
`options.categories` is not available on this route.
"""

from __future__ import annotations

import numpy as np

from smtjax.data import stream
from smtjax.data.base import DataError, DataInfo, row_rng
from smtjax.data.images import VOCAB_SIZE, decode_image, encode_images

DATASETS = {'mnist': 'mnist', 'sketch': 'quickdraw_bitmap'}
_FILE_OPTIONS = {  # the files route's options, accepted (and mostly unused) so shipped configs work as they are
    'mnist': dict(cache_dir='', test_path='', test_fraction=0.01, download=True, download_timeout=10.0),
    'sketch': dict(cache_dir='', categories='', test_fraction=0.1, download=True, download_timeout=10.0),
}


def _splits(name: str, o: dict) -> dict[str, str]:
  if name == 'mnist':
    if o['test_path']:
      raise DataError('config.data.options.test_path: not available with data.source=tfds (TFDS has the test split)')
    return {'train': 'train', 'test': 'test'}
  if o['categories']:
    raise DataError("config.data.options.categories: not available with data.source=tfds (TFDS's quickdraw_bitmap "
                    'mixes all 345 categories); use the files route (data.source=files) for a subset')
  f = o['test_fraction']
  if not 0 < f < 1:
    raise DataError(f'config.data.options.test_fraction: must be in (0, 1), got {f!r}')
  pct = max(1, min(99, round(100 * f)))
  return {'train': f'train[:{100 - pct}%]', 'test': f'train[{100 - pct}%:]'}


def open_split(dataset: str, split: str, data_dir: str, download: bool):
  """tfds.data_source(...) with TFDS's failures turned into a DataError that says how to provide the data."""
  import tensorflow_datasets as tfds
  try:
    return tfds.data_source(dataset, split=split, data_dir=data_dir or None, download=download)
  except Exception as e:  # TFDS raises many kinds (not prepared, wrong file format, no network)
    where = data_dir or "TFDS's default data_dir (~/tensorflow_datasets or $TFDS_DATA_DIR)"
    raise DataError(f'config.data.path: cannot open TFDS {dataset!r} split {split!r} in {where}: '
                    f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""} (prepare it with '
                    f'`tfds build {dataset} --file_format=array_record --data_dir=DIR`, or use '
                    '--config.data.source=files)') from None


class RecordWindowSource:
  """Random windows of T+1 pixels over the images of random-access record sources (one per split)."""

  def __init__(self, info: DataInfo, splits: dict, pixels: int, seed: int):
    self.info, self.seed, self.pixels = info, int(seed), int(pixels)
    self._splits = splits
    W = info.seq_len + 1
    for split, ds in splits.items():
      if len(ds) * pixels < W:
        raise DataError(f'{split} split: {len(ds)} images of {pixels} pixels hold no window of seq_len+1 = {W}; '
                        'use a shorter config.data.seq_len')

  def _image(self, ds, i: int) -> np.ndarray:
    return encode_images(np.asarray(ds[int(i)]['image']).reshape(-1))

  def get_batch(self, split: str, index: int, row_start: int, row_stop: int) -> dict[str, np.ndarray]:
    if split not in stream.SPLITS:
      raise ValueError(f'unknown split {split!r}; expected one of {stream.SPLITS}')
    ds, P, W = self._splits[split], self.pixels, self.info.seq_len + 1
    n_starts = len(ds) * P - W + 1
    starts = [int(row_rng(self.seed, split, index, r).integers(n_starts)) for r in range(row_start, row_stop)]
    needed = sorted({i for s in starts for i in range(s // P, (s + W - 1) // P + 1)})
    images = {i: self._image(ds, i) for i in needed}  # random access: only the records these rows cover
    w_BxW = np.empty((len(starts), W), np.int32)
    for b, s in enumerate(starts):
      first = s // P
      pixels = np.concatenate([images[i] for i in range(first, (s + W - 1) // P + 1)])
      w_BxW[b] = pixels[s - first * P:s - first * P + W]
    return {'x': np.ascontiguousarray(w_BxW[:, :-1]), 'y': np.ascontiguousarray(w_BxW[:, 1:])}


def make_tfds_source(data_config, seed: int):
  """The source of data_config.name ('mnist' or 'sketch') read through tfds.data_source."""
  name = data_config.name
  if name not in DATASETS:
    raise DataError(f'config.data.source: tfds serves data.name {", ".join(map(repr, DATASETS))}, not {name!r} '
                    '(TinyStories and your own arrays are read from files: data.source=files)')
  o = stream.parse_options(data_config, _FILE_OPTIONS[name], name)
  T = stream.seq_len_of(data_config)
  splits = {k: open_split(DATASETS[name], s, data_config.path, bool(o['download']))
            for k, s in _splits(name, o).items()}
  shape = tuple(int(d) for d in np.asarray(splits['train'][0]['image']).shape[:2])
  info = DataInfo(vocab_size=VOCAB_SIZE, seq_len=T, kind='image', image_shape=shape,
                  decode=lambda t: decode_image(t, shape))
  return RecordWindowSource(info, splits, shape[0] * shape[1], seed)
