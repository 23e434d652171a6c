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


class WorkdirError(SmtjaxError, ValueError):
  """The workdir, or a file in it, cannot be created, read or written; the message names the path."""


class WorkdirLockedError(WorkdirError):
  """Another live run holds the workdir; the message names its host and pid."""


class Preempted(SmtjaxError):
  """Training stopped on a signal after saving a checkpoint and the metrics of `step`; run again to resume.
  Not a failure: the command-line entry points exit with status 0."""

  def __init__(self, step: int, signal_name: str, workdir: str):
    self.step, self.signal_name, self.workdir = step, signal_name, workdir
    super().__init__(f'stopped by {signal_name} after step {step}: checkpoint and metrics saved in {workdir}; '
                     'run the same command to resume')
