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
from ml_collections import config_flags

from smtjax import config as config_lib
from smtjax import logs
from smtjax import variants as variants_lib
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


def define_study_flags(name: str) -> None:
  """The flags every study command shares: --out (default workdirs/<name>) and --lanes."""
  flags.DEFINE_string('out', f'workdirs/{name}', 'Output directory (runs, tables, figures).')
  flags.DEFINE_integer('lanes', 2, 'Runs trained at once, each in a process pinned to its own core (0: in this '
                       'process).')


_CONFIG_FLAG = []  # set by define_config: this command's --config is a config file


def define_config(help_text: str = 'Config file, optionally with a variant: configs/x.py:small.'):
  """The --config flag (a config file and variant, fields overridable as --config.model.d_model=64, locked so a
  misspelt field is an error). `run` checks its arguments before absl parses them, so that each error is one
  line: a missing config file, an unknown variant (the config file's ConfigError), a field that does not exist
  (naming the nearest known one) and a value that does not parse as its field's type."""
  config_flags.DEFINE_config_file('config', None, help_text, lock_config=True)
  _CONFIG_FLAG.append(True)


def run(main) -> None:
  """app.run(main), with the --config arguments checked first (`check_config_args`)."""
  app.run(main, flags_parser=parse_flags)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's own parsing (with its usage message on an error), after `check_config_args` where the command
  has a --config file flag."""
  if _CONFIG_FLAG:
    check_config_args(argv)
  return app.parse_flags_with_usage(argv)


def _config_args(argv: list[str]) -> tuple[str | None, list[tuple[str, str | None]]]:
  """(the --config value, [(field path, value text or None for a bare boolean), ...]) of a command line."""
  spec, overrides = None, []
  for i, a in enumerate(argv[1:], 1):
    if a == '--':
      break
    name, eq, value = a.lstrip('-').partition('=')
    if not a.startswith('-'):
      continue
    nxt = argv[i + 1] if i + 1 < len(argv) else None
    if name == 'config':
      spec = value if eq else nxt
    elif name.startswith(('config.', 'noconfig.')):
      overrides.append((name.split('.', 1)[1], value if eq else None))
  return spec, overrides


def check_config_args(argv: list[str]) -> None:
  """Exits with one line for a --config file that does not exist or does not build, or a --config.<field> that
  the config lacks or whose value does not parse as the field's type (int, float); anything else is left to
  ml_collections."""
  spec, overrides = _config_args(argv)
  if not spec:
    return
  name = spec.partition(':')[0]
  if not epath.Path(name).is_file():  # ml_collections would print two tracebacks
    raise SystemExit(f'error: --config={spec}: no config file {name}' + (' (it is a directory)' if
                     epath.Path(name).is_dir() else ''))
  try:
    config = config_lib.load_config(spec)
  except ConfigError as e:
    raise SystemExit(f'error: {e}') from None
  known = set(config_lib.field_paths(config))
  for path, text in overrides:
    if path not in known:
      raise SystemExit(f'error: {config_lib.unknown_field(config, path)}')
    node = config
    for part in path.split('.'):
      node = node[part]
    kind = type(node)
    if text is None or kind not in (int, float):
      continue
    try:
      int(text) if kind is int else float(text)
    except ValueError:
      raise SystemExit(f'error: config.{path}: expected {kind.__name__}, got {text!r}') from None


def parse_variant(text: str) -> tuple[str, dict]:
  """'name:rollout_steps=4,num_transitions=8' -> ('name', {'rollout_steps': 4, 'num_transitions': 8})."""
  name, sep, body = text.partition(':')
  items = [item.partition('=') for item in body.split(',')]
  if not sep or not name or any(not key.strip() or not eq for key, eq, _ in items):
    raise ConfigError(f'--variant={text!r}: expected NAME:key=value[,key=value...] (config.smt fields)')
  return name.strip(), {key.strip(): variants_lib.parse_value(value.strip()) for key, _, value in items}


def configs_of(specs, variant: str) -> dict:
  """{task label: config} from 'name' or 'name:extra' specs (label 'name' or 'name_extra')."""
  out = {}
  for spec in specs:
    name, _, extra = spec.partition(':')
    out[f'{name}_{extra}' if extra else name] = config_lib.load_config(
        f'configs/{name}.py:{variant}' + (f',{extra}' if extra else ''))
  return out
