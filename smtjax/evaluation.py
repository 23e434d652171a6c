"""Evaluation on held-out batches: one evaluator for training, `experiments.evaluate`, the studies and the
notebooks.

    evaluator = Evaluator(run, nets, EvalSpec.for_training(run), mesh)  # run: the resolved config.Run
    metrics = evaluator(params, source, num_batches)

`eval_step` is a pure function of one batch returning *sums* (cross-entropy, target count, hits), so the
mean over several batches is exact whatever the number of targets per batch. What it scores
(definitions in smtjax/inference.py; losses in nats per target):
- `objective`: the method's training losses on the batch, named `<metric>_test` (mean over batches), except
  that `loss_dyn_test` is always the one-step MSE from clean teacher memories; with drift-robust SMT options
  the trained (rolled, noisy) dynamics loss is `loss_dyn_rollout_test`;
- `rnn_only_loss` / `rnn_only_accuracy`: the RNN reads the whole sequence from its initial memory;
- `transformer_loss` / `transformer_accuracy` (instead of the RNN's, config.method='transformer'): the
  plain-Transformer reference's prediction of y_t from x_0..x_t;
- `teacher_loss` / `teacher_accuracy`: the decoder's prediction of y_t from the encoder memory of x_0..x_t;
- with `per_position`, `rnn_only_loss_per_t` / `teacher_loss_per_t`: the same at each sequence position t
  (does the RNN use what it read long ago?);
- with `read_len` > 0, `rnn_loss` / `rnn_accuracy` and their values at each of eval_len rollout positions:
  the teacher encodes x[:read_len], then the RNN reads the next true tokens (`inference.read`), and
  `teacher_loss_read_targets`: the teacher on exactly those targets.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from smtjax import config as config_lib
from smtjax import inference, smt
from smtjax import sharding as shard_lib
from smtjax.data.pipeline import BatchIterator
from smtjax.models import Networks
from smtjax.objectives import objective


@dataclasses.dataclass(frozen=True)
class EvalSpec:
  """What `eval_step` scores (see the module docstring)."""
  objective: bool = False
  teacher: bool = True
  read_len: int = 0  # > 0: also score `inference.read` from this prefix
  eval_len: int = 0
  teacher_chunk: int = 0  # bidirectional teacher: time positions per encoder call (0 = all at once)
  per_position: bool = False  # also rnn_only and teacher scores at each sequence position t

  @classmethod
  def for_training(cls, run: config_lib.Run) -> EvalSpec:
    """The periodic evaluation of a training run: the objective, the RNN alone and, for a causal teacher
    that is trained (not BPTT's), the teacher (`run.eval_teacher`)."""
    return cls(objective=True, teacher=run.eval_teacher)


def _sums(scores: dict, axis=None) -> dict:
  return {'ce': jnp.sum(scores['ce'], axis), 'n': jnp.sum(scores['valid'], axis),
          'hit': jnp.sum(scores['correct'], axis)}


def eval_step(params, batch, rng, *, nets: Networks, config, spec: EvalSpec) -> dict:
  """Sums over one held-out batch: {'objective': metrics} and {'rnn_only' | 'transformer' | 'teacher' | 'read' |
  'teacher_read': {'ce', 'n', 'hit'}} ('read' and 'teacher_read' per rollout position)."""
  x, y = batch['x'], batch['y']
  # The model a run trains: its RNN from the initial memory, or the plain-Transformer reference (which has none).
  name, scores = (('transformer', inference.reference_scores) if config.method == 'transformer'
                  else ('rnn_only', inference.rnn_only))
  model = scores(nets, params, x, y)
  out = {name: _sums(model)}
  if spec.per_position:
    out[f'{name}_t'] = _sums(model, axis=0)
  if spec.objective:
    metrics = objective(config)(nets, params, batch, rng, config)[1]
    if smt.has_drift_options(config):  # loss_dyn_test: the one-step MSE from clean memories, whatever was trained
      clean = smt.smt_losses(nets, params, batch, rng, smt.one_step(config))[1]
      metrics = dict(metrics, loss_dyn=clean['loss_dyn'], loss_dyn_rollout=metrics['loss_dyn'])
    out['objective'] = metrics
  if spec.teacher:
    t = inference.teacher_scores(nets, params, x, y, spec.read_len or None, spec.teacher_chunk)
    out['teacher'] = _sums(t)
    if spec.per_position:
      out['teacher_t'] = _sums(t, axis=0)
    if spec.read_len:
      span = slice(spec.read_len - 1, spec.read_len - 1 + spec.eval_len)
      out['teacher_read'] = _sums({k: v[:, span] for k, v in t.items()}, axis=0)
  if spec.read_len:
    out['read'] = _sums(inference.read(nets, params, x, y, spec.read_len, spec.eval_len), axis=0)
  return out


def _mean(ce, n):
  return float(ce / n) if n > 0 else float('nan')


class Evaluator:
  """`eval_step` of a resolved run (`config.Run`) jitted on a mesh (default: the run's mesh over all devices; the
  batch split over them), run over batches 0..num_batches-1 of a source's 'test' split; returns the means
  (module docstring)."""

  def __init__(self, run: config_lib.Run, nets: Networks, spec: EvalSpec, mesh=None, devices=None):
    self.config, self.spec = run.config, spec
    self.mesh = shard_lib.make_mesh(run.mesh_shape, devices) if mesh is None else mesh
    self.batch_sharding = shard_lib.batch_sharding(self.mesh)
    step = functools.partial(eval_step, nets=nets, config=self.config, spec=spec)
    self.step = jax.jit(step, in_shardings=(None, self.batch_sharding, shard_lib.replicated(self.mesh)),
                        out_shardings=shard_lib.replicated(self.mesh))

  def totals(self, params, source, num_batches: int, split: str = 'test') -> dict:
    """The sums of `eval_step` over batches 0..num_batches-1 of `split` (numpy, float64), plus 'num_sequences'
    and 'num_batches'."""
    it = BatchIterator(source, split, self.config.batch_size, jax.process_index(), jax.process_count(), prefetch=0)
    rng = jax.random.PRNGKey(self.config.seed + 1)
    totals = None
    for i in range(num_batches):
      out = jax.device_get(self.step(params, shard_lib.global_batch(next(it), self.batch_sharding),
                                     jax.random.fold_in(rng, i)))
      out = jax.tree.map(lambda v: np.asarray(v, np.float64), out)
      totals = out if totals is None else jax.tree.map(np.add, totals, out)
    it.close()
    return dict(totals, num_batches=num_batches, num_sequences=num_batches * self.config.batch_size)

  def __call__(self, params, source, num_batches: int, split: str = 'test') -> dict:
    return summarize(self.totals(params, source, num_batches, split))


def summarize(totals: dict) -> dict:
  """Means of `Evaluator.totals`: `<metric>_test`, `<scorer>_loss` / `<scorer>_accuracy`, and for `read`
  the values per rollout position (lists)."""
  out = {}
  for k, v in totals.get('objective', {}).items():
    out[f'{k}_test'] = float(v) / totals['num_batches']
  for name in ('rnn_only', 'teacher', 'transformer'):
    if name in totals:
      s = totals[name]
      out[f'{name}_loss'], out[f'{name}_accuracy'] = _mean(s['ce'], s['n']), _mean(s['hit'], s['n'])
    if f'{name}_t' in totals:
      s = totals[f'{name}_t']
      out[f'{name}_loss_per_t'] = [_mean(c, n) for c, n in zip(s['ce'], s['n'])]
  if 'read' in totals:
    r = totals['read']
    out['rnn_loss'], out['rnn_accuracy'] = _mean(r['ce'].sum(), r['n'].sum()), _mean(r['hit'].sum(), r['n'].sum())
    out['rnn_loss_per_position'] = [_mean(c, n) for c, n in zip(r['ce'], r['n'])]
    out['num_targets_per_position'] = [int(n) for n in r['n']]
    out['num_rnn_targets'] = int(r['n'].sum())
  if 'teacher_read' in totals:  # a spec that reads a prefix and scores the teacher too
    t = totals['teacher_read']
    out['teacher_loss_read_targets'] = _mean(t['ce'].sum(), t['n'].sum())
    out['teacher_loss_per_position'] = [_mean(c, n) for c, n in zip(t['ce'], t['n'])]
    out['num_teacher_targets'] = int(totals['teacher']['n'])
  return out
