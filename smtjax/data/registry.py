"""The one table of dataset names: `config.data.name` -> the factory that builds its Source."""

from __future__ import annotations

from collections.abc import Callable

from smtjax.data import arrays, images, stream, synthetic, text, tfds_source
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
    source = tfds_source.make_tfds_source(data_config, seed)
  elif via != 'files':
    raise DataError(f"config.data.source: unknown value {via!r}; expected 'files' or 'tfds'")
  elif name not in SOURCES:
    raise DataError(f'config.data.name: unknown task or dataset {name!r}; known: {", ".join(known_sources())}')
  else:
    source = SOURCES[name](data_config, seed)
  return _with_valid_split(source, data_config)


def _with_valid_split(source: Source, data_config) -> Source:
  """A 'valid' split held out of the training data (config.data.valid_fraction > 0). Synthetic tasks always
  have one (an independent stream); real token streams cut it from the end of their training stream."""
  fraction = data_config.valid_fraction
  if not fraction or source.info.kind == 'synthetic':
    return source
  if not isinstance(source, stream.WindowSource):
    raise DataError(f'config.data.valid_fraction: data.name={data_config.name!r} (source {data_config.source!r}) '
                    'has no held-out validation split; set it to 0')
  return source.holding_out(fraction)
