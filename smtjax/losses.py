"""The SMT loss terms (method.md §4), each a pure function of arrays. Targets of -1 are masked out."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def token_cross_entropy(logits, targets):
  """Per-position cross-entropy (nats) and validity mask. logits: [..., V]; targets: [...] (-1 = none)."""
  valid = targets >= 0
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  ce = -jnp.take_along_axis(logp, jnp.maximum(targets, 0)[..., None], axis=-1)[..., 0]
  return jnp.where(valid, ce, 0.0), valid


def mean_cross_entropy(logits, targets):
  """Mean cross-entropy (nats) over the valid targets (>= 0); 0 when there is none."""
  ce, valid = token_cross_entropy(logits, targets)
  return jnp.sum(ce) / jnp.maximum(jnp.sum(valid), 1)


def _safe_div(a, b):
  return a / jnp.maximum(b, 1e-12)


def decoder_loss(logits_BxFxV, targets_BxF, gamma: float = 1.0):
  """Predictive-state loss: masked cross-entropy, future position j weighted by gamma**j.

  Returns (L_dec, L_dec0): the weighted mean over all valid (row, j), normalised by the total weight
  (so gamma reweights positions without changing the scale), and the mean at position 0 alone.
  """
  ce, valid = token_cross_entropy(logits_BxFxV, targets_BxF)
  w = (gamma ** jnp.arange(targets_BxF.shape[-1], dtype=jnp.float32)) * valid
  loss = _safe_div(jnp.sum(w * ce), jnp.sum(w))
  loss0 = _safe_div(jnp.sum(ce[:, 0]), jnp.sum(valid[:, 0]))
  return loss, loss0


def accuracy(logits, targets):
  """Fraction of valid targets (>= 0) predicted by the argmax."""
  valid = targets >= 0
  hit = (jnp.argmax(logits, axis=-1) == targets) & valid
  return _safe_div(jnp.sum(hit), jnp.sum(valid))


def dynamics_loss(pred, target, mask=None, detach_target: bool = False):
  """Mean squared error between predicted and encoder memories [N, K, D]; `mask` [N] drops pairs."""
  if detach_target:
    target = jax.lax.stop_gradient(target)
  se = jnp.mean(jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32)), axis=(-2, -1))
  if mask is None:
    return jnp.mean(se)
  return _safe_div(jnp.sum(se * mask), jnp.sum(mask))


def uniformity_loss(tokens_NxD, rng, num_samples: int = 512, t: float = 2.0):
  """log mean_{i<j} exp(-t ||z_i - z_j||^2) over L2-normalised tokens, on up to `num_samples` of them
  drawn without replacement (Wang & Isola's uniformity; method.md §4)."""
  z = tokens_NxD.astype(jnp.float32)
  if z.shape[0] > num_samples:
    idx = jax.random.choice(rng, z.shape[0], (num_samples,), replace=False)
    z = z[idx]
  z = z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
  n = z.shape[0]
  # ||z_i - z_j||^2 = 2 - 2 z_i.z_j for unit vectors: one [n, n] matrix product instead of an [n, n, D]
  # difference tensor and a gather of the pairs i < j.
  sq = jnp.maximum(2.0 - 2.0 * (z @ z.T), 0.0)
  upper = jnp.triu(jnp.ones((n, n), bool), k=1)
  return jax.nn.logsumexp(jnp.where(upper, -t * sq, -jnp.inf)) - jnp.log(n * (n - 1) / 2)
