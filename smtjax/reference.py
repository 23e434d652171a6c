"""The plain-Transformer reference (config.method='transformer'): the teacher without its memory bottleneck, a
causal Transformer of the teacher's width and total depth (`models.ReferenceTransformer`) trained on the same
targets with the mean cross-entropy over every target of the batch. The bound a researcher compares SMT's
teacher with: how many steps a Transformer that reads the whole past needs for a task, and what it reaches."""

from __future__ import annotations

from smtjax import losses
from smtjax.models import Networks


def reference_losses(nets: Networks, params, batch, rng, config):
  """(total, metrics): loss = mean cross-entropy over the valid targets, accuracy."""
  del rng, config
  logits = nets.reference_logits(params, batch['x'])
  loss = losses.mean_cross_entropy(logits, batch['y'])
  return loss, dict(loss=loss, accuracy=losses.accuracy(logits, batch['y']))
