"""What every experiments/ entry point does around its work, in one place: JAX's options as flags
(--jax_log_compiles etc.), reject stray arguments, quiet absl logging (Orbax logs every save at INFO)
unless --verbosity is given, and turn the library's errors into a one-line exit: bad data, checkpoints or
a diverged run -> `error: ...`; bad values (ConfigError and other ValueErrors) -> a usage error."""

from __future__ import annotations

import contextlib
import os

import jax
from absl import app, flags, logging

from smtjax.checkpoint import CheckpointError
from smtjax.data import DataError
from smtjax.train import NonFiniteLossError

# JAX's options as absl flags of every entry point (--jax_log_compiles, --jax_debug_nans, ...). Importing
# this module defines them, so it happens once, before app.run parses the command line.
jax.config.config_with_absl()


def start(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)


@contextlib.contextmanager
def user_errors():
  try:
    yield
  except (CheckpointError, DataError, NonFiniteLossError) as e:  # DataError/CheckpointError are ValueErrors too
    raise SystemExit(f'error: {e}')
  except ValueError as e:
    raise app.UsageError(str(e))


def require_workdir(workdir: str) -> None:
  """Exits unless `workdir` holds a training run's config.json."""
  if not os.path.isfile(os.path.join(workdir, 'config.json')):
    raise SystemExit(f'error: {workdir} has no config.json (is it a training workdir?)')
