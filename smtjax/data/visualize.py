"""See the data: a batch decoded back to text, or drawn as a PNG grid of images.

    python -m experiments.visualize --config=configs/mnist.py --out=grid.png
    python -m experiments.visualize --config=configs/tinystories.py:small --config.data.path=DIR --num=4

An image sequence is drawn in raster rows of the image width; a window that starts inside an image
(training windows are random slices of the pixel stream) therefore appears rolled sideways, and the
pixels after the window's end are drawn in blue.
"""

from __future__ import annotations

import math

import numpy as np
from etils import epath

from smtjax import plotting
from smtjax.data.base import DataInfo
from smtjax.errors import DataError

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


def save_image_grid(source_info: DataInfo, x, path, scale: int = 4, cols: int = 0) -> epath.Path:
  """Draws tokens [B, T] of an image source as a PNG grid at `path` (local or gs://...); returns the path."""
  return plotting.write_png(path, image_grid(source_info, x, scale, cols))
