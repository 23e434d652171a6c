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


def define_config(help_text: str = 'Config file, optionally with a variant: configs/x.py:small.'):
  """The --config flag (a config file and variant, fields overridable as --config.model.d_model=64, locked so a
  misspelt field is an error), whose errors are one line each instead of a flag-parsing traceback: a missing
  config file, an unknown variant (the config file's ConfigError), a field that does not exist (naming the
  nearest known one) and a value that does not parse as its field's type."""
  config_flags.DEFINE_config_file('config', None, help_text, lock_config=True)
  flag = flags.FLAGS['config']
  loaded = {}
  parse_file = flag.parser.parse

  def parse_config_file(path):
    name = path.partition(':')[0]
    if name and not epath.Path(name).is_file():  # ml_collections would print two tracebacks, later
      raise SystemExit(f'error: --config={path}: no config file {name}' + (' (it is a directory)' if
                       epath.Path(name).is_dir() else ''))
    try:
      loaded['config'] = parse_file(path)
    except ValueError as e:
      if isinstance(e.__context__, ConfigError):  # ml_collections re-raised it with the traceback as text
        raise SystemExit(f'error: {e.__context__}') from None
      raise
    return loaded['config']
  flag.parser.parse = parse_config_file

  parse_overrides = flag._parse

  def parse_with_overrides(argument):
    try:
      config = parse_overrides(argument)
    except (AttributeError, KeyError):  # an override names a field the config does not have
      config = loaded.get('config')
      if config is None:
        raise
      known = set(config_lib.field_paths(config))
      for path in flag._GetOverrides(flag._GetArgv()):
        if path not in known:
          raise SystemExit(f'error: {config_lib.unknown_field(config, path)}') from None
      raise
    for path in flag._GetOverrides(flag._GetArgv()):
      _typed_override(flags.FLAGS[f'config.{path}'], path, config)
    return config
  flag._parse = parse_with_overrides


def _typed_override(field_flag, path: str, config) -> None:
  """A value of --config.<path> that does not parse as the field's type exits with one line naming both."""
  parse = field_flag.parse  # parses the text, then sets the field (where a type mismatch raises)
  node = config
  for part in path.split('.'):
    node = node[part]
  want = type(node).__name__ if node is not None else 'value'

  def typed(argument):
    try:
      return parse(argument)
    except (TypeError, ValueError, flags.IllegalFlagValueError):
      raise SystemExit(f'error: config.{path}: expected {want}, got {argument!r}') from None
  field_flag.parse = typed


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
