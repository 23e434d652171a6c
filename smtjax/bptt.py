"""The BPTT baseline (method.md §6): the same RNN (cell + readout), rolled over all T inputs from its
initial memory (config.model.initial_memory: zeros, learned, or the encoder's m_{-1}), with the readout's
cross-entropy at every step that has a target and gradients through the whole rollout
(`bptt.truncation > 0`: the carried memory is detached every `truncation` steps). With a linear cell
(mingru, lru) `bptt.parallel_scan=True` computes the rollout as a parallel scan over time
(`Networks.scan_rollout`): the same memories and gradients in O(log T) sequential depth."""

from __future__ import annotations

from smtjax import losses
from smtjax.models import Networks


def bptt_losses(nets: Networks, params, batch, rng, config):
  """(total, metrics): loss = loss_readout (mean cross-entropy over targets), accuracy."""
  del rng
  x, y = batch['x'], batch['y']
  mem0 = nets.initial_memory(params, x.shape[0])
  # truncation: no gradient crosses t = k, 2k, ...; the initial memory (learned or the encoder's) keeps the
  # gradient of the first k steps. A linear cell may run as a parallel scan (validated: no truncation).
  mems = nets.rollout(params, mem0, x, truncation=config.bptt.truncation, parallel=config.bptt.parallel_scan)
  logits = nets.readout_all(params, mems)
  loss = losses.mean_cross_entropy(logits, y)
  return loss, dict(loss=loss, loss_readout=loss, accuracy=losses.accuracy(logits, y))
