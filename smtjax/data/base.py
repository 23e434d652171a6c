"""The Source interface every dataset implements, and the per-row random generator."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Protocol

import numpy as np

from smtjax.errors import DataError  # noqa: F401  (re-exported)


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


# 'valid': held out from the training data for choosing settings (config.data.valid_fraction), never the test split.
SPLIT_IDS = {'train': 0, 'test': 1, 'valid': 2}


def row_rng(seed: int, split: str, index: int, row: int) -> np.random.Generator:
  """The generator for one row of one batch: independent of batch size and process count."""
  return np.random.default_rng([seed, SPLIT_IDS[split], index, row])


def parse_options(data_config, defaults: dict, name: str | None = None) -> dict:
  """`data_config.options` merged over `defaults` (an option given as None keeps its default); an option the
  source lacks raises DataError naming it and the known ones. `name`: the source's (default data.name)."""
  raw = getattr(data_config, 'options', None)
  if raw is None:
    raw = {}
  elif hasattr(raw, 'to_dict'):
    raw = raw.to_dict()
  else:
    raw = dict(raw)
  unknown = sorted(set(raw) - set(defaults))
  if unknown:
    raise DataError(f'config.data.options.{unknown[0]}: unknown option for data.name='
                    f'{name or data_config.name!r}; known: {", ".join(sorted(defaults)) or "(none)"}')
  return {**defaults, **{k: v for k, v in raw.items() if v is not None}}
