"""Images as pixel sequences (method.md §9): MNIST IDX files and Quick, Draw! `numpy_bitmap` files.

Each H x W image is its H*W intensity bytes in raster order (tokens 0..255, vocabulary 256); the images
of a file are concatenated into one stream and training windows are random slices of it (they cross
image borders).
"""

from __future__ import annotations

import gzip
import math
import pathlib
import struct
import zlib

import numpy as np

from smtjax.data import download, stream
from smtjax.data.base import DataError, DataInfo

VOCAB_SIZE = 256
_IDX_DTYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype('>i2'), 0x0C: np.dtype('>i4'),
               0x0D: np.dtype('>f4'), 0x0E: np.dtype('>f8')}


# -------------------------------------------------------------------------------------- tokeniser

def encode_images(images) -> np.ndarray:
  """uint8-valued images [N, H, W] (or [H, W]) -> flat uint8 tokens [N*H*W] in raster order."""
  a = np.asarray(images)
  if a.dtype != np.uint8:
    if not np.issubdtype(a.dtype, np.integer) or (a.size and (a.min() < 0 or a.max() > 255)):
      raise DataError(f'encode_images: pixels must be integers in [0, 255], got dtype {a.dtype}'
                      + (f' with range [{a.min()}, {a.max()}]' if a.size else ''))
    a = a.astype(np.uint8)
  return np.ascontiguousarray(a).reshape(-1)


def decode_image(tokens, image_shape: tuple[int, int]) -> np.ndarray:
  """Tokens [n] -> uint8 [ceil(n/W), W]: the pixels in raster rows of width W (an [H, W] image when
  n = H*W); the last row is zero-padded and -1 (padding) reads as 0."""
  t = np.asarray(tokens).reshape(-1)
  if t.size and t.max() > 255:
    raise DataError(f'decode_image: token {int(t.max())} is outside the pixel vocabulary [0, 256)')
  W = image_shape[-1]
  out = np.zeros(math.ceil(t.size / W) * W, np.uint8)
  out[:t.size] = np.where(t < 0, 0, t)
  return out.reshape(-1, W)


# -------------------------------------------------------------------------------------------- IDX

def _read_bytes(path: pathlib.Path, limit: int = -1) -> bytes:
  """The (gunzipped, if it starts with the gzip magic) bytes of `path`; at most `limit` if given."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise DataError(f'{path}: no such file' if not path.exists() else f'{path}: not a file')
  with open(path, 'rb') as f:
    gz = f.read(2) == b'\x1f\x8b'
  try:
    with (gzip.open if gz else open)(path, 'rb') as f:
      return f.read(limit)
  except (EOFError, gzip.BadGzipFile, zlib.error) as e:
    raise DataError(f'{path}: truncated or corrupt gzip file ({e})') from None


def _parse_idx_header(path, data: bytes) -> tuple[np.dtype, tuple[int, ...], int]:
  if len(data) < 4:
    raise DataError(f'{path}: truncated IDX file ({len(data)} bytes; the header alone needs at least 4)')
  if data[:2] != b'\x00\x00' or data[2] not in _IDX_DTYPES or data[3] == 0:
    raise DataError(f'{path}: wrong magic number 0x{data[:4].hex()}; not an IDX file (expected 00 00, a type '
                    'byte 08/09/0b/0c/0d/0e and the number of dimensions, e.g. 0x00000803 for MNIST images)')
  ndim, header = data[3], 4 + 4 * data[3]
  if len(data) < header:
    raise DataError(f'{path}: truncated IDX file (header of {ndim} dimensions needs {header} bytes, found {len(data)})')
  return _IDX_DTYPES[data[2]], struct.unpack(f'>{ndim}I', data[4:header]), header


def read_idx(path) -> np.ndarray:
  """An IDX file (optionally gzipped), e.g. MNIST's: uint8 images [N, H, W] or labels [N]."""
  data = _read_bytes(path)
  dtype, dims, header = _parse_idx_header(path, data)
  need = math.prod(dims) * dtype.itemsize
  if len(data) - header < need:
    raise DataError(f'{path}: truncated IDX file (the header promises shape {dims}, {need} bytes of data; '
                    f'only {len(data) - header} follow)')
  if len(data) - header > need:
    raise DataError(f'{path}: {len(data) - header - need} unexpected bytes after the IDX data of shape {dims}')
  a = np.frombuffer(data, dtype, count=math.prod(dims), offset=header).reshape(dims)
  return a.astype(dtype.newbyteorder('='), copy=False)


def idx_shape(path) -> tuple[int, ...]:
  """The shape an IDX file's header declares (reads only the header)."""
  data = _read_bytes(path, 4 + 4 * 255)
  return _parse_idx_header(path, data)[1]


def _build_idx_pixels(src: pathlib.Path, out):
  images = read_idx(src)
  if images.ndim != 3 or images.dtype != np.uint8:
    raise DataError(f'{src}: expected uint8 images [N, H, W] (IDX magic 0x00000803), '
                    f'got {images.dtype} of shape {images.shape}')
  out.write(encode_images(images).tobytes())


def idx_pixels(src: pathlib.Path, cache_dir: str = '') -> tuple[np.ndarray, tuple[int, int]]:
  """(cached flat pixel stream, (H, W)) of an IDX image file."""
  tokens = stream.cached_tokens(src, 'idx-pixels', _build_idx_pixels, cache_dir)
  return tokens, tuple(idx_shape(src)[1:])


def _find_one(d: pathlib.Path, prefix: str) -> pathlib.Path | None:
  hits = sorted(p for p in d.rglob(prefix + '*') if p.is_file() and 'idx3' in p.name and not p.name.endswith('.part'))
  return hits[0] if hits else None


def mnist(data_config, seed: int):
  """MNIST pixel sequences. `path`: a directory holding train-images-idx3-ubyte(.gz) and
  t10k-images-idx3-ubyte(.gz) (the test split), or one IDX image file; '' = $SMTJAX_DATA_DIR, cache, download."""
  o = stream.parse_options(data_config, dict(cache_dir='', test_path='', test_fraction=0.01, download=True,
                                             download_timeout=10.0), 'mnist')
  T = stream.seq_len_of(data_config)
  if data_config.path:
    path = stream.existing_path(data_config.path)
  else:
    looked = stream.default_data_dir('mnist', o['cache_dir'])
    has_both = lambda d: d.is_dir() and _find_one(d, 'train-images') and _find_one(d, 't10k-images')
    path = next((d for d in looked if has_both(d)), None)
    if path is None:
      path = looked[-1]
      download.download_mnist(path, looked, o['download'], o['download_timeout'])
  if path.is_dir():
    train, test = _find_one(path, 'train-images'), _find_one(path, 't10k-images')
    if train is None or (test is None and not o['test_path']):
      missing = 'train-images-idx3-ubyte.gz' if train is None else 't10k-images-idx3-ubyte.gz'
      raise DataError(f'config.data.path: {path} holds no {missing} (MNIST IDX image file)')
  else:
    train, test = path, None
  if o['test_path']:
    test = stream.existing_path(o['test_path'], 'config.data.options.test_path')
  tokens, shape = idx_pixels(train, o['cache_dir'])
  if test is not None:
    test_tokens, test_shape = idx_pixels(test, o['cache_dir'])
    if test_shape != shape:
      raise DataError(f'{test}: images are {test_shape}, but the training images ({train}) are {shape}')
    splits = {'train': [(str(train), tokens)], 'test': [(str(test), test_tokens)]}
  else:
    splits = stream.split_tail([(str(train), tokens)], o['test_fraction'])
  info = DataInfo(vocab_size=VOCAB_SIZE, seq_len=T, kind='image', image_shape=shape,
                  decode=lambda t: decode_image(t, shape))
  return stream.WindowSource(info, splits, seed)


# ----------------------------------------------------------------------------------- Quick, Draw!

def _bitmap_shape(path, shape) -> tuple[int, int]:
  """(H, W) of a bitmap array [N, H*W], [N, 1, H*W] or [N, H, W] (square when flat)."""
  if len(shape) == 3 and shape[1] != 1:
    return shape[1], shape[2]
  if len(shape) in (2, 3):
    side = math.isqrt(shape[-1])
    if side * side == shape[-1]:
      return side, side
  raise DataError(f'{path}: expected bitmaps of shape [N, 784], [N, 1, 784] or [N, H, W] '
                  f'(Quick, Draw! numpy_bitmap), got {shape}')


def bitmap_pixels(path: pathlib.Path, cache_dir: str = '') -> tuple[np.ndarray, tuple[int, int], int]:
  """(flat pixel stream, (H, W), N) of a `.npy` bitmap file; uint8 files are memory-mapped as they are
  (they already are the token stream), other integer dtypes go through the token cache."""
  try:
    a = np.load(path, mmap_mode='r', allow_pickle=False)
  except (ValueError, OSError, EOFError) as e:
    raise DataError(f'{path}: not a readable .npy array ({e})') from None
  shape = _bitmap_shape(path, a.shape)
  if a.dtype == np.uint8 and a.flags.c_contiguous:
    return a.reshape(-1), shape, a.shape[0]

  def build(src, out):
    try:
      out.write(encode_images(np.asarray(a)).tobytes())
    except DataError as e:
      raise DataError(f'{src}: {e}') from None
  return stream.cached_tokens(path, 'bitmap', build, cache_dir), shape, a.shape[0]


def sketch(data_config, seed: int):
  """Quick, Draw! sketches as pixel sequences. `path`: a directory of `<category>.npy` files (or one);
  '' = $SMTJAX_DATA_DIR/sketch, the cache, or a download of `options.categories`. The test split is the
  last `options.test_fraction` (10%) of the drawings of every category."""
  o = stream.parse_options(data_config, dict(cache_dir='', categories='', test_fraction=0.1, download=True,
                                             download_timeout=10.0), 'sketch')
  T = stream.seq_len_of(data_config)
  cats = [c.strip() for c in o['categories'].split(',') if c.strip()] if isinstance(o['categories'], str) \
      else list(o['categories'])
  if data_config.path:
    path = stream.existing_path(data_config.path)
  else:
    looked = stream.default_data_dir('sketch', o['cache_dir'])
    path = next((d for d in looked if d.is_dir() and any(d.rglob('*.npy'))), None)
    if path is None:
      path = looked[-1]
      download.download_quickdraw(path, looked, cats, o['download'], o['download_timeout'])
  files = [path] if path.is_file() else sorted(p for p in path.rglob('*.npy') if p.is_file())
  if cats:
    by_name = {p.stem: p for p in files}
    missing = [c for c in cats if c not in by_name]
    if missing:
      raise DataError(f'config.data.options.categories: no {missing[0]}.npy in {path}')
    files = [by_name[c] for c in cats]
  if not files:
    raise DataError(f'config.data.path: {path} holds no .npy files (Quick, Draw! numpy_bitmap <category>.npy)')
  if not 0 < o['test_fraction'] < 1:
    raise DataError(f'config.data.options.test_fraction: must be in (0, 1), got {o["test_fraction"]!r}')
  splits, shape = {'train': [], 'test': []}, None
  for f in files:
    tokens, s, n = bitmap_pixels(f, o['cache_dir'])
    if shape is not None and s != shape:
      raise DataError(f'{f}: drawings are {s}, but {files[0]} has {shape}')
    shape = s
    n_train = n - max(1, round(o['test_fraction'] * n))
    cut = n_train * s[0] * s[1]
    splits['train'].append((str(f), tokens[:cut]))
    splits['test'].append((f'{f} (last {n - n_train} drawings)', tokens[cut:]))
  info = DataInfo(vocab_size=VOCAB_SIZE, seq_len=T, kind='image', image_shape=shape,
                  decode=lambda t: decode_image(t, shape))
  return stream.WindowSource(info, splits, seed)
