"""The optimizer of every method: AdamW after gradient clipping (one global norm, or the teacher and the
RNN each on its own), a warm-up then constant or cosine learning rate, and frozen parameter groups."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

# The two networks of SMT as top-level parameter groups (per-network gradient clipping and norms); the plain-
# Transformer reference counts as a teacher.
NETWORKS = {'teacher': ('encoder', 'decoder', 'transformer'), 'rnn': ('cell', 'readout', 'init_memory')}


def learning_rate_schedule(o, num_steps: int) -> optax.Schedule:
  """Linear warm-up over warmup_frac*num_steps, then constant or cosine decay to 0 (method.md §8)."""
  warmup = int(round(o.warmup_frac * num_steps))
  if o.schedule == 'cosine':
    return optax.warmup_cosine_decay_schedule(0.0, o.lr, warmup, max(num_steps, warmup + 1), end_value=0.0)
  if warmup == 0:
    return optax.constant_schedule(o.lr)
  return optax.join_schedules([optax.linear_schedule(0.0, o.lr, warmup), optax.constant_schedule(o.lr)], [warmup])


def global_norm(tree):
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


def network_norms(tree) -> dict:
  """{'teacher': norm, 'rnn': norm}: global norms of each network's part of a parameter-shaped tree."""
  return {net: global_norm([tree[k] for k in keys if k in tree]) for net, keys in NETWORKS.items()}


def clip_by_network_norm(max_norm: float) -> optax.GradientTransformation:
  """Scales the teacher's and the RNN's updates separately to a global norm of at most `max_norm` each
  (the public code's two clip_grad_norm_ calls). Top-level groups outside NETWORKS are left as they are."""
  def update_fn(updates, state, params=None):
    del params
    norms = network_norms(updates)
    out = dict(updates)
    for net, keys in NETWORKS.items():
      scale = jnp.where(norms[net] < max_norm, 1.0, max_norm / jnp.maximum(norms[net], 1e-30))
      for k in keys:
        if k in out:
          out[k] = jax.tree.map(lambda g, scale=scale: (g * scale).astype(g.dtype), out[k])
    return out, state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def _is_gain(path) -> bool:
  """An RMSNorm gain (a parameter named 'scale')."""
  return getattr(path[-1], 'key', None) == 'scale'


def decay_all_toward_unit_gains(weight_decay: float) -> optax.GradientTransformation:
  """Decoupled weight decay of every parameter: updates + wd * (p - anchor), the anchor 1 for norm gains and 0
  otherwise. The public code's AdamW decays every parameter, its norm gains being 1 + g with g decayed toward 0."""
  def update_fn(updates, state, params):
    decayed = jax.tree_util.tree_map_with_path(
        lambda path, u, p: u + weight_decay * (p - (1.0 if _is_gain(path) else 0.0)), updates, params)
    return decayed, state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def _adamw(o, schedule) -> optax.GradientTransformation:
  """AdamW with decoupled weight decay on optim.weight_decay_on: 'matrices' (ndim >= 2) or 'all'."""
  if o.weight_decay_on == 'all':
    return optax.chain(optax.scale_by_adam(b1=o.b1, b2=o.b2), decay_all_toward_unit_gains(o.weight_decay),
                       optax.scale_by_learning_rate(schedule))
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
  return optax.adamw(schedule, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay, mask=decay_mask)


def _trainable_labels(params, frozen: tuple[str, ...]):
  return {k: jax.tree.map(lambda _, k=k: 'freeze' if k in frozen else 'train', v) for k, v in params.items()}


def make_optimizer(config, frozen: tuple[str, ...]) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """AdamW (weight decay by optim.weight_decay_on) after gradient clipping (optim.clip_mode: one global norm, or
  the teacher and the RNN each to optim.grad_clip); the `frozen` parameter groups (`config.frozen_networks`,
  `config.Run.frozen`) get no update."""
  o = config.optim
  schedule = learning_rate_schedule(o, config.num_steps)
  tx = _adamw(o, schedule)
  if o.grad_clip > 0:
    clip = clip_by_network_norm(o.grad_clip) if o.clip_mode == 'per_network' else optax.clip_by_global_norm(o.grad_clip)
    tx = optax.chain(clip, tx)
  if frozen:
    tx = optax.multi_transform({'train': tx, 'freeze': optax.set_to_zero()}, lambda p: _trainable_labels(p, frozen))
  return tx, schedule
