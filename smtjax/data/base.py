"""The Source interface and the registry that builds one from `config.data`."""

from __future__ import annotations

import dataclasses
from typing import Callable, Protocol

import numpy as np


class DataError(ValueError):
  """Bad data input (missing or malformed file, unknown dataset); the message names what is wrong."""


@dataclasses.dataclass(frozen=True)
class DataInfo:
  vocab_size: int  # tokens are in [0, vocab_size); -1 marks padding (x) or no target (y)
  seq_len: int  # T
  kind: str  # 'synthetic', 'text' or 'image'
  decode: Callable[[np.ndarray], object] | None = None  # tokens -> text (str) or image array
  image_shape: tuple[int, ...] | None = None  # (H, W) for image data


class Source(Protocol):
  info: DataInfo

  def get_batch(self, split: str, index: int, row_start: int, row_stop: int) -> dict[str, np.ndarray]:
    """Rows [row_start, row_stop) of global batch `index` of `split` ('train' or 'test').

    Returns {'x': int32 [rows, T], 'y': int32 [rows, T]}; a pure function of (seed, split, index, row).
    """
    ...


_REGISTRY: dict[str, Callable] = {}


def register(name: str):
  def deco(fn):
    _REGISTRY[name] = fn
    return fn
  return deco


def known_sources() -> list[str]:
  _import_all()
  return sorted(_REGISTRY)


def _import_all():
  # Importing the modules fills the registry.
  from smtjax.data import synthetic  # noqa: F401
  try:
    from smtjax.data import real  # noqa: F401
  except ImportError:  # the real-data module may not exist yet
    pass


def make_source(data_config, seed: int) -> Source:
  """Builds the source named by data_config.name; raises DataError for unknown names or bad options."""
  _import_all()
  name = data_config.name
  via = data_config.get('source', 'files') if hasattr(data_config, 'get') else 'files'
  if via == 'tfds':
    from smtjax.data.tfds_source import make_tfds_source
    return make_tfds_source(data_config, seed)
  if via != 'files':
    raise DataError(f"config.data.source: unknown value {via!r}; expected 'files' or 'tfds'")
  if name not in _REGISTRY:
    raise DataError(f'config.data.name: unknown task or dataset {name!r}; known: {", ".join(sorted(_REGISTRY))}')
  return _REGISTRY[name](data_config, seed)


def row_rng(seed: int, split: str, index: int, row: int) -> np.random.Generator:
  """The generator for one row of one batch: independent of batch size and process count."""
  return np.random.default_rng([seed, {'train': 0, 'test': 1}[split], index, row])
