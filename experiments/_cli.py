"""What every experiments/ entry point does around its work, in one place: reject stray arguments, route
`--jax_*` flags to JAX, quiet absl logging (Orbax logs every save at INFO) unless --verbosity is given, and
turn smtjax's own errors into a one-line exit: bad data, checkpoints or a diverged run -> `error: ...`; bad
config values -> a usage error. Any other exception (a bug, an error inside JAX) keeps its traceback."""

from __future__ import annotations

import contextlib
import os

from absl import app, flags, logging

from smtjax.errors import ConfigError, SmtjaxError


def start(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)


@contextlib.contextmanager
def user_errors():
  try:
    yield
  except ConfigError as e:
    raise app.UsageError(str(e))
  except SmtjaxError as e:
    raise SystemExit(f'error: {e}')


def require_workdir(workdir: str) -> None:
  """Exits unless `workdir` holds a training run's config.json."""
  if not os.path.isfile(os.path.join(workdir, 'config.json')):
    raise SystemExit(f'error: {workdir} has no config.json (is it a training workdir?)')
