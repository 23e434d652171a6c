"""What every experiments/ entry point does around its work, in one place: reject stray arguments, set up
absl logging (process index on every line; only our INFO lines, as Orbax logs every save at INFO, unless
--verbosity is given), and turn the library's errors into a one-line exit: bad data, checkpoints, a
diverged run or a workdir in use -> `error: ...`; bad values (ConfigError and other ValueErrors) -> a
usage error."""

from __future__ import annotations

import contextlib

from absl import app, flags
from etils import epath

from smtjax import logs
from smtjax.checkpoint import CheckpointError
from smtjax.data import DataError
from smtjax.train import NonFiniteLossError
from smtjax.workdir import WorkdirLockedError


def start(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logs.setup(verbosity_given=flags.FLAGS['verbosity'].present)


@contextlib.contextmanager
def user_errors():
  try:
    yield
  # DataError and CheckpointError are ValueErrors too: caught first.
  except (CheckpointError, DataError, NonFiniteLossError, WorkdirLockedError) as e:
    raise SystemExit(f'error: {e}')
  except ValueError as e:
    raise app.UsageError(str(e))


def require_workdir(workdir) -> None:
  """Exits unless `workdir` (local or gs://...) holds a training run's config.json."""
  if not (epath.Path(workdir) / 'config.json').exists():
    raise SystemExit(f'error: {workdir} has no config.json (is it a training workdir?)')
