"""See the data: a batch decoded back to text, or drawn as a PNG grid of images.

    python -m smtjax.data.visualize --config=configs/mnist.py --out=grid.png
    python -m smtjax.data.visualize --config=configs/tinystories.py:small --config.data.path=DIR --num=4

An image sequence is drawn in raster rows of the image width; a window that starts inside an image
(training windows are random slices of the pixel stream) therefore appears rolled sideways, and the
pixels after the window's end are drawn in blue.
"""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np
from etils import epath

from smtjax.data.base import DataError, DataInfo

_MISSING_RGB = (40, 60, 140)  # pixels outside the sequence, or padding (-1)
_GRID_RGB = (255, 140, 0)  # lines between tiles


def batch_to_text(source_info: DataInfo, x) -> list[str]:
  """Tokens [B, T] -> B strings, through the source's decode (text sources, or ids for others)."""
  x = np.asarray(x)
  if x.ndim == 1:
    x = x[None]
  decode = source_info.decode
  if decode is None or source_info.kind == 'image':
    decode = lambda t: ' '.join(str(int(v)) for v in t if v >= 0)
  return [str(decode(row)) for row in x]


def image_grid(source_info: DataInfo, x, scale: int = 4, cols: int = 0) -> np.ndarray:
  """Tokens [B, T] of an image source -> uint8 RGB [H', W', 3]: one tile per sequence."""
  if source_info.image_shape is None:
    raise DataError(f'image_grid: the source (kind {source_info.kind!r}) has no image_shape; use batch_to_text')
  x = np.asarray(x)
  if x.ndim == 1:
    x = x[None]
  B, T = x.shape
  W = source_info.image_shape[-1]
  rows = math.ceil(T / W)
  cols = cols or math.ceil(math.sqrt(B))
  grid_rows = math.ceil(B / cols)
  tile_h, tile_w = rows * scale + 1, W * scale + 1
  out = np.empty((grid_rows * tile_h + 1, cols * tile_w + 1, 3), np.uint8)
  out[:] = _GRID_RGB
  for b in range(B):
    t = np.full(rows * W, -1, np.int64)
    t[:T] = x[b]
    valid = (t >= 0).reshape(rows, W)
    gray = np.clip(t, 0, 255).astype(np.uint8).reshape(rows, W)
    rgb = np.where(valid[..., None], gray[..., None], np.array(_MISSING_RGB, np.uint8)).astype(np.uint8)
    rgb = rgb.repeat(scale, 0).repeat(scale, 1)
    r, c = divmod(b, cols)
    out[1 + r * tile_h:1 + r * tile_h + rows * scale, 1 + c * tile_w:1 + c * tile_w + W * scale] = rgb
  return out


def write_png(path, rgb: np.ndarray):
  """Writes uint8 [H, W, 3] (or [H, W] gray) as a PNG with zlib alone."""
  a = np.asarray(rgb, np.uint8)
  if a.ndim == 2:
    a = np.repeat(a[..., None], 3, axis=2)
  h, w, _ = a.shape

  def chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack('>I', len(data)) + tag + data + struct.pack('>I', zlib.crc32(tag + data) & 0xFFFFFFFF)

  raw = np.concatenate([np.zeros((h, 1), np.uint8), a.reshape(h, w * 3)], axis=1).tobytes()  # filter 0 per row
  png = (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 2, 0, 0, 0))
         + chunk(b'IDAT', zlib.compress(raw, 6)) + chunk(b'IEND', b''))
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(png)


def save_image_grid(source_info: DataInfo, x, path, scale: int = 4, cols: int = 0) -> epath.Path:
  """Draws tokens [B, T] of an image source as a PNG grid at `path`; returns the path."""
  write_png(path, image_grid(source_info, x, scale, cols))
  return epath.Path(path)


def main(argv):
  """The CLI (flags are defined under __main__ only, so importing this module defines none)."""
  from smtjax.data import make_source
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  config = _CONFIG.value
  try:
    source = make_source(config.data, config.seed)
  except DataError as e:
    raise SystemExit(f'error: {e}') from None
  batch = source.get_batch(_SPLIT.value, _INDEX.value, 0, _NUM.value)
  info = source.info
  if info.kind == 'image':
    out = _OUT.value or 'grid.png'
    save_image_grid(info, batch['x'], out, scale=_SCALE.value)
    print(f'wrote {_NUM.value} sequences of {info.seq_len} pixels ({config.data.name}, '
          f'{info.image_shape[0]}x{info.image_shape[1]} images, {_SPLIT.value} batch {_INDEX.value}) to {out}')
    return
  texts = batch_to_text(info, batch['x'])
  body = ''.join(f'--- {config.data.name} {_SPLIT.value} batch {_INDEX.value} row {i} ---\n{t}\n'
                 for i, t in enumerate(texts))
  if _OUT.value:
    epath.Path(_OUT.value).write_text(body)
    print(f'wrote {len(texts)} sequences to {_OUT.value}')
  else:
    print(body, end='')


if __name__ == '__main__':
  from absl import app, flags
  from ml_collections import config_flags

  _CONFIG = config_flags.DEFINE_config_file('config', None, 'a configs/*.py file (with :variant)', lock_config=True)
  _OUT = flags.DEFINE_string('out', '', 'PNG for image data (default grid.png); a text file for text (default: print)')
  _SPLIT = flags.DEFINE_enum('split', 'train', ['train', 'test'], 'which split to draw from')
  _INDEX = flags.DEFINE_integer('index', 0, 'which batch')
  _NUM = flags.DEFINE_integer('num', 16, 'how many sequences')
  _SCALE = flags.DEFINE_integer('scale', 4, 'image pixels per data pixel')
  flags.mark_flag_as_required('config')
  app.run(main)
