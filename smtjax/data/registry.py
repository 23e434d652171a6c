"""The one table of dataset names: `config.data.name` -> the factory that builds its Source."""

from __future__ import annotations

from collections.abc import Callable

from smtjax.data import arrays, images, synthetic, text, tfds_source
from smtjax.data.base import Source
from smtjax.errors import DataError

SOURCES: dict[str, Callable[..., Source]] = {
    **synthetic.SOURCES,  # retrieval, copy, stack, keys_values, modular, parity
    'tinystories': text.tinystories,
    'mnist': images.mnist,
    'sketch': images.sketch,
    'tokens': arrays.tokens,
    'arrays': arrays.arrays,
}


def known_sources() -> list[str]:
  return sorted(SOURCES)


def make_source(data_config, seed: int) -> Source:
  """Builds the source named by data_config.name (through TFDS when data_config.source is 'tfds'); raises
  DataError for unknown names or bad options."""
  name = data_config.name
  via = data_config.source
  if via == 'tfds':
    return tfds_source.make_tfds_source(data_config, seed)
  if via != 'files':
    raise DataError(f"config.data.source: unknown value {via!r}; expected 'files' or 'tfds'")
  if name not in SOURCES:
    raise DataError(f'config.data.name: unknown task or dataset {name!r}; known: {", ".join(known_sources())}')
  return SOURCES[name](data_config, seed)
