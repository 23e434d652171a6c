"""The BPTT baseline (method.md §6): the same RNN (cell + readout), rolled over all T inputs from its
initial memory (config.model.initial_memory: zeros, learned, or the encoder's m_{-1}), with the readout's
cross-entropy at every step that has a target and gradients through the whole rollout
(`bptt.truncation > 0`: the carried memory is detached every `truncation` steps). With a linear cell
(mingru, lru) `bptt.parallel_scan=True` computes the rollout as a parallel scan over time
(`Networks.scan_rollout`): the same memories and gradients in O(log T) sequential depth."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from smtjax import losses
from smtjax.models import Networks


def rollout(nets: Networks, params, mem0, x_BxT, truncation: int = 0):
  """Memories after each input [B, T, K, D]; with truncation, no gradient crosses the step boundaries
  t = truncation, 2*truncation, ... The initial memory (t = 0) is never detached: a learned or encoder
  initial memory gets the gradient of the first `truncation` steps (all of them if truncation >= T)."""
  def body(carry, x_B):
    mem, t = carry
    if truncation > 0:
      mem = jnp.where((t > 0) & (t % truncation == 0), jax.lax.stop_gradient(mem), mem)
    new = nets.step(params, mem, x_B)
    return (new, t + 1), new

  _, mems = jax.lax.scan(body, (mem0, jnp.zeros((), jnp.int32)), jnp.swapaxes(x_BxT, 0, 1))
  return jnp.swapaxes(mems, 0, 1)


def bptt_losses(nets: Networks, params, batch, rng, config):
  """(total, metrics): loss = loss_readout (mean cross-entropy over targets), accuracy."""
  del rng
  x, y = batch['x'], batch['y']
  mem0 = nets.initial_memory(params, x.shape[0])
  if config.bptt.parallel_scan:  # a linear cell: every memory at once (validated: no truncation)
    mems = nets.scan_rollout(params, mem0, x)
  else:
    mems = rollout(nets, params, mem0, x, config.bptt.truncation)
  logits = nets.readout_all(params, mems)
  loss = losses.mean_cross_entropy(logits, y)
  return loss, dict(loss=loss, loss_readout=loss, accuracy=losses.accuracy(logits, y))
