"""What every experiments/ entry point does around its work, in one place: JAX's options as flags
(--jax_log_compiles etc.), reject stray arguments, set up absl logging (process index on every line; only
our INFO lines, as Orbax logs every save at INFO, unless --verbosity is given), and turn smtjax's own errors
into a one-line exit: bad data, checkpoints, workdirs (one in use too) or a diverged run -> `error: ...`; bad
config values -> a usage error; a run stopped by SIGTERM/SIGINT after saving -> its message and exit status
0. Any other exception (a bug, an error inside JAX) keeps its traceback."""

from __future__ import annotations

import contextlib

import jax
from absl import app, flags
from etils import epath

from smtjax import logs
from smtjax.errors import ConfigError, Preempted, SmtjaxError

# JAX's options as absl flags of every entry point (--jax_log_compiles, --jax_debug_nans, ...). Importing
# this module defines them, so it happens once, before app.run parses the command line.
jax.config.config_with_absl()


def start(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logs.setup(verbosity_given=flags.FLAGS['verbosity'].present)


@contextlib.contextmanager
def user_errors():
  try:
    yield
  except Preempted as e:
    print(f'{e}.', flush=True)
    raise SystemExit(0) from None
  except ConfigError as e:
    raise app.UsageError(str(e)) from None
  except SmtjaxError as e:
    raise SystemExit(f'error: {e}') from None


def require_workdir(workdir) -> None:
  """Exits unless `workdir` (local or gs://...) holds a training run's config.json."""
  if not (epath.Path(workdir) / 'config.json').exists():
    raise SystemExit(f'error: {workdir} has no config.json (is it a training workdir?)')


def quiet_config_file_errors(name: str = 'config') -> None:
  """A ConfigError raised by a config file's get_config (an unknown variant) is reported as its message,
  not as the traceback ml_collections puts into flag-parsing errors."""
  flag = flags.FLAGS[name]
  parse = flag.parser.parse

  def quiet_parse(path):
    try:
      return parse(path)
    except ValueError as e:
      if isinstance(e.__context__, ConfigError):  # ml_collections re-raised it with the traceback as text
        raise ValueError(str(e.__context__)) from None
      raise
  flag.parser.parse = quiet_parse
