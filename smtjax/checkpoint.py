"""Orbax checkpointing of the train state and the data iterator, under `workdir/checkpoints/`.

A checkpoint is a Composite of `state` (the TrainState pytree, saved sharded by every process
collectively) and `data` (the iterator's JSON state). Saves are asynchronous and atomic (Orbax writes a
temporary directory and renames it), so a run killed mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json

import jax
import orbax.checkpoint as ocp
from etils import epath

from smtjax import workdir as workdir_lib
from smtjax.config import ConfigError


class CheckpointError(ValueError):
  """A checkpoint cannot be used (unreadable, or saved by an incompatible config)."""


class Checkpointer:
  def __init__(self, workdir, max_to_keep: int = 2):
    self.directory = workdir_lib.as_path(workdir) / 'checkpoints'
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        item_names=('state', 'data'))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, data_state: dict):
    self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    data=ocp.args.JsonSave(data_state)))

  def restore(self, abstract_state, step: int | None = None):
    """(state, data_state) of `step` (default latest), placed with the shardings in `abstract_state`
    (a pytree of jax.ShapeDtypeStruct with .sharding)."""
    step = self.latest_step() if step is None else step
    try:
      out = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                               data=ocp.args.JsonRestore()))
    except (ValueError, KeyError, TypeError, FileNotFoundError) as e:
      raise CheckpointError(f'cannot restore checkpoint step {step} from {self.directory}: {e}') from e
    return out['state'], out['data']

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


def abstract_with_shardings(abstract_tree, shardings):
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_tree, shardings)


# Fields that fix the parameter and state shapes (and the meaning of the saved memories): a run may
# only resume (or initialise) from a workdir whose saved config agrees on these.
ARCHITECTURE_FIELDS = ('model.vocab_size', 'model.d_model', 'model.num_heads', 'model.mlp_ratio',
                       'model.num_mem_tokens', 'model.enc_depth', 'model.dec_depth', 'model.cell',
                       'model.cell_depth', 'model.encoder_attention', 'model.mem_dim')
# Values of architecture fields added later, for configs saved before them.
_FIELD_DEFAULTS = {'model.mem_dim': 0}


def _get(d: dict, dotted: str):
  for part in dotted.split('.'):
    d = d.get(part, {}) if isinstance(d, dict) else {}
  return d if d != {} else None


def check_compatible(config, workdir, what: str = 'resume from'):
  """Raises ConfigError if workdir/config.json disagrees with `config` on an architecture field."""
  path = epath.Path(workdir) / 'config.json'
  if not path.exists():
    return
  try:
    saved = json.loads(path.read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise CheckpointError(f'{path} is unreadable: {e}') from e
  current = json.loads(config.to_json_best_effort())
  def get(d, k):
    v = _get(d, k)
    return _FIELD_DEFAULTS.get(k) if v is None else v
  diffs = [f'config.{k}: saved {get(saved, k)!r}, now {get(current, k)!r}'
           for k in ARCHITECTURE_FIELDS if get(saved, k) != get(current, k)]
  if diffs:
    raise ConfigError(f'cannot {what} {workdir}: its run has a different architecture:\n  ' + '\n  '.join(diffs))
