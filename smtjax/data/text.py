"""TinyStories (and any UTF-8 text) at the character level: ASCII bytes, vocabulary 256 (method.md §9).

The official release's `.txt` files separate stories by `<|endoftext|>` lines; each marker is replaced
by `options.endoftext` (default '': the marker's line stays as an empty line, so stories are separated
by a blank line, like the paragraphs of the HF `validation` rows). Non-ASCII characters are dropped.
"""

from __future__ import annotations

import codecs
import pathlib

import numpy as np

from smtjax.data import download, stream
from smtjax.data.base import DataError, DataInfo

VOCAB_SIZE = 256
ENDOFTEXT = b'<|endoftext|>'
_CHUNK = 1 << 24


def encode_text(text: str) -> np.ndarray:
  """str -> uint8 [n] ASCII codes; non-ASCII characters are dropped."""
  return np.frombuffer(text.encode('ascii', errors='ignore'), np.uint8).copy()


def decode_text(tokens) -> str:
  """Token ids [n] -> str; -1 (padding / no target) is skipped."""
  t = np.asarray(tokens).reshape(-1)
  t = t[t >= 0]
  if t.size and t.max() > 255:
    raise DataError(f'decode_text: token {int(t.max())} is outside the byte vocabulary [0, 256)')
  return t.astype(np.uint8).tobytes().decode('utf-8', errors='replace')


def tokenize_text_file(src: pathlib.Path, out, endoftext: bytes = b'') -> int:
  """Streams `src` (UTF-8 text) to `out` as ASCII bytes; returns the token count.

  Raises DataError naming the file if it is empty, is binary (NUL bytes or invalid UTF-8), or holds no
  ASCII text at all.
  """
  decoder = codecs.getincrementaldecoder('utf-8')('strict')
  carry, offset, n = b'', 0, 0
  with open(src, 'rb') as f:
    while True:
      chunk = f.read(_CHUNK)
      final = not chunk
      if (nul := chunk.find(b'\x00')) >= 0:
        raise DataError(f'{src}: not a text file (NUL byte at offset {offset + nul}); expected UTF-8 text')
      try:
        decoder.decode(chunk, final)
      except UnicodeDecodeError as e:
        if final and e.reason == 'unexpected end of data':
          pass  # an excerpt cut inside the last character: its bytes are non-ASCII and dropped anyway
        else:
          raise DataError(f'{src}: not a UTF-8 text file (invalid byte near offset {max(0, offset + e.start)}: '
                          f'{e.reason})') from None
      if offset == 0 and final:
        raise DataError(f'{src}: the file is empty; expected UTF-8 text')
      parts = (carry + chunk).split(ENDOFTEXT)
      if not final:  # the tail may hold the start of a marker that ends in the next chunk
        keep = len(ENDOFTEXT) - 1
        parts[-1], carry = parts[-1][:-keep], parts[-1][-keep:]
      a = np.frombuffer(endoftext.join(parts), np.uint8)
      a = a[a < 128]
      out.write(a.tobytes())
      n += a.size
      offset += len(chunk)
      if final:
        break
  if n == 0:
    raise DataError(f'{src}: holds no ASCII text (after dropping non-ASCII characters and <|endoftext|> markers)')
  return n


def text_tokens(src: pathlib.Path, cache_dir: str = '', endoftext: str = '') -> np.ndarray:
  """The cached ASCII token stream of one text file (memory-mapped uint8)."""
  if not src.is_file():
    raise DataError(f'{src}: not a file')
  if src.stat().st_size == 0:
    raise DataError(f'{src}: the file is empty; expected UTF-8 text')
  eot = endoftext.encode('ascii')
  return stream.cached_tokens(src, 'ascii', lambda s, f: tokenize_text_file(s, f, eot), cache_dir,
                              params=f'eot={endoftext!r}')


def _is_valid_name(p: pathlib.Path) -> bool:
  n = p.name.lower()
  return 'valid' in n or 'val.' in n or '_val' in n or '-val' in n or 'test' in n


def find_text_files(path: pathlib.Path) -> tuple[list[pathlib.Path], list[pathlib.Path]]:
  """(train files, validation files) of a file or directory; validation is [] unless the directory holds
  both `*train*` and `*valid*` text files."""
  if path.is_file():
    return [path], []
  files = sorted(p for p in path.rglob('*.txt') if p.is_file())
  if not files:
    raise DataError(f'config.data.path: {path} holds no .txt files; expected TinyStories text '
                    '(e.g. TinyStories-train.txt and TinyStories-valid.txt)')
  train = [p for p in files if 'train' in p.name.lower()]
  valid = [p for p in files if _is_valid_name(p) and p not in train]
  if train and valid:
    return train, valid
  return files, []


def tinystories(data_config, seed: int):
  """TinyStories characters: `path` is a .txt file or a directory; '' = $SMTJAX_DATA_DIR, cache, download.

  Test split: `options.test_path`, else the `*valid*` files of a directory holding `*train*` and
  `*valid*` files, else the last `options.test_fraction` of the stream.
  """
  o = stream.parse_options(data_config, dict(cache_dir='', test_path='', test_fraction=0.01, endoftext='',
                                             download=True, download_timeout=10.0), 'tinystories')
  T = stream.seq_len_of(data_config)
  if data_config.path:
    path = stream.existing_path(data_config.path)
  else:
    looked = stream.default_data_dir('tinystories', o['cache_dir'])
    # $SMTJAX_DATA_DIR/tinystories may hold any text files; the download cache must be complete.
    complete = [all((looked[-1] / n).is_file() for n in download.TINYSTORIES_FILES)]
    ready = [d.is_dir() and any(d.rglob('*.txt')) for d in looked[:-1]] + complete
    path = next((d for d, ok in zip(looked, ready) if ok), None)
    if path is None:
      path = looked[-1]
      download.download_tinystories(path, looked, o['download'], o['download_timeout'])
  try:
    o['endoftext'].encode('ascii')
  except UnicodeEncodeError:
    raise DataError(f'config.data.options.endoftext: must be ASCII, got {o["endoftext"]!r}') from None
  tok = lambda p: (str(p), text_tokens(p, o['cache_dir'], o['endoftext']))
  train, valid = find_text_files(path)
  if o['test_path']:
    valid = find_text_files(stream.existing_path(o['test_path'], 'config.data.options.test_path'))[0]
  if valid:
    splits = {'train': [tok(p) for p in train], 'test': [tok(p) for p in valid]}
  else:
    splits = stream.split_tail([tok(p) for p in train], o['test_fraction'])
  info = DataInfo(vocab_size=VOCAB_SIZE, seq_len=T, kind='text', decode=decode_text)
  return stream.WindowSource(info, splits, seed)
