"""smtjax's own error types, in one place. Each message names what is wrong (a config field, a file, a step).

The experiments/ entry points turn exactly these into one-line exits; any other exception (a bug, or an
error inside JAX) keeps its traceback.
"""


class SmtjaxError(Exception):
  """Base class of every error smtjax raises for bad input or a failed run."""


class ConfigError(SmtjaxError, ValueError):
  """A config value is invalid; the message names the field."""


class DataError(SmtjaxError, ValueError):
  """Bad data input (missing or malformed file, unknown dataset); the message names what is wrong."""


class CheckpointError(SmtjaxError, ValueError):
  """A checkpoint or run directory cannot be used (missing, damaged, another architecture)."""


class NonFiniteLossError(SmtjaxError, FloatingPointError):
  """The training loss became NaN or Inf; the message names the step."""
