"""absl logging for the entry points: every line names its process (`p0`, `p1`, ... of a multi-host run),
and at the default verbosity only smtjax's and experiments' INFO lines show (Orbax logs every save at
INFO; its warnings still show)."""

from __future__ import annotations

import logging as std_logging
import os

import jax
from absl import logging
from jax._src import xla_bridge

_OURS = tuple(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), d) + os.sep
              for d in ('smtjax', 'experiments'))


def process_index() -> int | None:
  """jax.process_index(), or None before jax has started its backends (asking would start them, and
  jax.distributed.initialize() must come first)."""
  if not xla_bridge.backends_are_initialized():
    return None
  return jax.process_index()


class _ProcessFormatter(logging.PythonFormatter):
  def format(self, record):
    i = process_index()
    return f'p{"?" if i is None else i} ' + super().format(record)


class _OnlyOurInfo(std_logging.Filter):
  """Passes warnings and above from anywhere, INFO only from this repository's code."""

  def filter(self, record):
    return record.levelno >= std_logging.WARNING or record.pathname.startswith(_OURS)


def setup(verbosity_given: bool = False) -> None:
  """Process-index prefix on every absl line; without --verbosity: INFO from our code only."""
  handler = logging.get_absl_handler()
  handler.setFormatter(_ProcessFormatter())
  handler.python_handler.setFormatter(_ProcessFormatter())
  if not verbosity_given:
    logging.set_verbosity(logging.INFO)
    for f in list(handler.filters):
      if isinstance(f, _OnlyOurInfo):
        handler.removeFilter(f)
    handler.addFilter(_OnlyOurInfo())
