"""Fetching public datasets into the cache directory (urllib only; nothing else is needed)."""

from __future__ import annotations

import hashlib
import os
import pathlib
import urllib.error
import urllib.request

from absl import logging

from smtjax.data.base import DataError

TINYSTORIES_URL = 'https://huggingface.co/datasets/roneneldan/TinyStories/resolve/main/'
TINYSTORIES_FILES = ('TinyStories-train.txt', 'TinyStories-valid.txt')

# The IDX files tensorflow-datasets itself downloads MNIST from (tfds image_classification/mnist.py),
# then a second public mirror; the MD5s are the published ones of the original files.
MNIST_URLS = ('https://storage.googleapis.com/cvdf-datasets/mnist/',
              'https://ossci-datasets.s3.amazonaws.com/mnist/')
MNIST_FILES = {
    'train-images-idx3-ubyte.gz': 'f68b3c2dcbeaaa9fbdd348bbdeb94873',
    'train-labels-idx1-ubyte.gz': 'd53e105ee54ea40749a09fcbcd1e9432',
    't10k-images-idx3-ubyte.gz': '9fb629c4189551a2d022fa330f9573f3',
    't10k-labels-idx1-ubyte.gz': 'ec29112dd5afa0611ce80d1b7f02629c',
}

QUICKDRAW_URL = 'https://storage.googleapis.com/quickdraw_dataset/full/numpy_bitmap/'


def fetch(url: str, dest: pathlib.Path, timeout: float = 10.0, md5: str | None = None) -> pathlib.Path:
  """Downloads `url` to `dest` (via `dest.part`, renamed when complete); raises OSError on failure."""
  dest.parent.mkdir(parents=True, exist_ok=True)
  part = dest.with_name(dest.name + f'.{os.getpid()}.part')
  h = hashlib.md5()
  logging.info('downloading %s -> %s', url, dest)
  try:
    with urllib.request.urlopen(url, timeout=timeout) as r, open(part, 'wb') as f:
      total = int(r.headers.get('Content-Length') or 0)
      done, next_report = 0, 1 << 27
      while chunk := r.read(1 << 20):
        f.write(chunk)
        h.update(chunk)
        done += len(chunk)
        if done >= next_report:
          of = f' of {total >> 20} MiB' if total else ''
          logging.info('  %d MiB%s', done >> 20, of)
          next_report += 1 << 27
    if md5 and h.hexdigest() != md5:
      raise OSError(f'{url}: MD5 {h.hexdigest()} differs from the published {md5}')
    os.replace(part, dest)
  finally:
    if part.exists():
      part.unlink()
  logging.info('saved %s', dest)
  return dest


def _fail(dataset: str, looked: list[pathlib.Path], wanted: str, reason: str, how: str) -> DataError:
  where = ' and '.join(str(p) for p in looked)
  return DataError(f'{dataset}: no data found at {where} (looked for {wanted}); {reason}. '
                   f'Provide it with --config.data.path=PATH ({how}), or set SMTJAX_DATA_DIR to a folder '
                   f'holding {looked[-1].name}/, or let it download (config.data.options.download=True; '
                   'needs internet).')


def download_tinystories(dest_dir: pathlib.Path, looked: list[pathlib.Path], enabled: bool, timeout: float):
  how = 'a TinyStories .txt file or a directory holding *train* and *valid* .txt files'
  wanted = ', '.join(TINYSTORIES_FILES)
  if not enabled:
    raise _fail('TinyStories', looked, wanted, 'downloads are disabled', how)
  try:
    # The validation file first: it is small, so a missing network fails fast.
    for name in reversed(TINYSTORIES_FILES):
      if not (dest_dir / name).exists():
        fetch(TINYSTORIES_URL + name, dest_dir / name, timeout)
  except (OSError, urllib.error.URLError) as e:
    raise _fail('TinyStories', looked, wanted, f'downloading from {TINYSTORIES_URL} failed ({e})', how) from e
  logging.info('TinyStories is in %s', dest_dir)


def download_mnist(dest_dir: pathlib.Path, looked: list[pathlib.Path], enabled: bool, timeout: float):
  how = 'a directory holding the IDX files train-images-idx3-ubyte.gz and t10k-images-idx3-ubyte.gz'
  wanted = ', '.join(MNIST_FILES)
  if not enabled:
    raise _fail('MNIST', looked, wanted, 'downloads are disabled', how)
  for name, md5 in MNIST_FILES.items():
    if (dest_dir / name).exists():
      continue
    errors = []
    for base in MNIST_URLS:
      try:
        fetch(base + name, dest_dir / name, timeout, md5)
        break
      except (OSError, urllib.error.URLError) as e:
        errors.append(f'{base}: {e}')
    else:
      raise _fail('MNIST', looked, wanted, 'downloading failed (' + '; '.join(errors) + ')', how)
  logging.info('MNIST is in %s', dest_dir)


def download_quickdraw(dest_dir: pathlib.Path, looked: list[pathlib.Path], categories: list[str], enabled: bool,
                       timeout: float):
  how = f'a directory of Quick, Draw! numpy_bitmap .npy files from {QUICKDRAW_URL}<category>.npy'
  if not enabled or not categories:
    reason = 'downloads are disabled' if not enabled else 'no config.data.options.categories to download'
    raise _fail('Quick, Draw!', looked, '<category>.npy files', reason, how)
  try:
    for c in categories:
      if not (dest_dir / f'{c}.npy').exists():
        fetch(QUICKDRAW_URL + urllib.request.quote(c) + '.npy', dest_dir / f'{c}.npy', timeout)
  except (OSError, urllib.error.URLError) as e:
    raise _fail('Quick, Draw!', looked, '<category>.npy files', f'downloading failed ({e})', how) from e
  logging.info('Quick, Draw! bitmaps are in %s', dest_dir)
