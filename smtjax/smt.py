"""The SMT objective (method.md §4) in two modes, and held-out RNN/teacher metrics.

- `window`: the published setting, one transition per sequence. With T >= Tc + Tf:
  m_t = E(x[0:Tc]), m_{t+1} = E(x[1:Tc+1]), RNN input x[Tc], decoder future inputs x[Tc:Tc+Tf-1],
  decoder targets y[Tc-1:Tc+Tf-1].
- `parallel`: one causal encoder pass gives the memory of every prefix, mems[:, L] = E(x[:L]) for
  L = 0..T (L = 0 is the initial memory m_{-1}). The dynamics loss covers the pairs
  (mems[:, L], x[:, L]) -> mems[:, L+1] for all L (or `num_transitions` sampled per sequence), the
  decoder loss a sampled set of memories with up to Tf future targets each, and the uniformity loss
  all memory tokens of the batch.
Both return (total, metrics) with the metric names loss, loss_dec, loss_dec0, loss_dyn, loss_unif.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from smtjax import config as config_lib
from smtjax import inference, losses
from smtjax.models import Networks


def _total(s, dec, dyn, unif):
  return s.coef_dec * dec + s.coef_dyn * dyn + s.coef_unif * unif


def _teacher(mem, s):
  """Memories seen through the teacher's trainability: frozen teacher -> no gradient into the encoder."""
  return jax.lax.stop_gradient(mem) if s.trainable == 'rnn' else mem


def _dynamics(nets: Networks, params, m_in, x_in, m_out, s):
  """L_dyn = MSE(U(m_in, x_in), m_out) over pairs with a real input, with the gradient routed by
  smt.dynamics_gradient: 'both' (into the RNN and both teacher memories), 'stop_target' (m_out detached),
  'rnn_only' (m_in and m_out detached: no dynamics gradient reaches the teacher)."""
  mode = config_lib.dynamics_gradient(s)
  if mode == 'rnn_only':
    m_in = jax.lax.stop_gradient(m_in)
  pred = nets.step(params, m_in, x_in)
  return losses.dynamics_loss(pred, m_out, mask=x_in >= 0, detach_target=mode in ('stop_target', 'rnn_only'))


def window_losses(nets: Networks, params, batch, rng, s):
  """One transition per sequence (the public implementation's windowing). The uniformity loss covers the
  tokens of m_t only, as in the public code."""
  x, y = batch['x'], batch['y']
  B = x.shape[0]
  Tc, Tf = s.context, s.future
  # Both windows through the encoder in one call.
  mems = _teacher(nets.encode(params, jnp.concatenate([x[:, :Tc], x[:, 1:Tc + 1]], axis=0)), s)
  m_t, m_next = mems[:B], mems[B:]
  dyn = _dynamics(nets, params, m_t, x[:, Tc], m_next, s)
  logits = nets.decode(params, m_t, x[:, Tc:Tc + Tf - 1])
  dec, dec0 = losses.decoder_loss(logits, y[:, Tc - 1:Tc + Tf - 1], s.gamma)
  unif = losses.uniformity_loss(m_t.reshape(-1, m_t.shape[-1]), rng, s.unif_samples, s.unif_t)
  total = _total(s, dec, dyn, unif)
  return total, dict(loss=total, loss_dec=dec, loss_dec0=dec0, loss_dyn=dyn, loss_unif=unif)


def _windows(a_BxN, starts_BxS, length: int):
  """a[b, starts[b, s] : starts[b, s] + length] -> [B, S, length]."""
  idx = starts_BxS[..., None] + jnp.arange(length)
  return jnp.take_along_axis(a_BxN[:, None, :], idx, axis=-1)


def transition_indices(rng, B: int, T: int, num_transitions: int):
  """Prefix lengths L of the dynamics pairs per sequence: all of 0..T-1, or a uniform sample."""
  if num_transitions in (0, T):
    return jnp.broadcast_to(jnp.arange(T), (B, T))
  return jax.random.randint(rng, (B, num_transitions), 0, T)


def parallel_losses(nets: Networks, params, batch, rng, s):
  """Every memory transition of every sequence from one encoder pass (method.md §4, last part)."""
  x, y = batch['x'], batch['y']
  B, T = x.shape
  r_dyn, r_dec, r_unif = jax.random.split(rng, 3)
  mems = _teacher(nets.prefix_memories(params, x), s)  # [B, T+1, K, D]
  K, D = mems.shape[2:]

  # Dynamics: (m_{L-1}, x_L) -> m_L, i.e. mems[:, L], x[:, L] -> mems[:, L+1].
  L = transition_indices(r_dyn, B, T, s.num_transitions)  # [B, N]
  N = L.shape[1]
  m_in = jnp.take_along_axis(mems, L[:, :, None, None], axis=1).reshape(B * N, K, D)
  m_out = jnp.take_along_axis(mems, (L + 1)[:, :, None, None], axis=1).reshape(B * N, K, D)
  x_in = jnp.take_along_axis(x, L, axis=1).reshape(B * N)
  dyn = _dynamics(nets, params, m_in, x_in, m_out, s)

  # Decoder: memory after L tokens predicts y[L-1 .. L+Tf-2] reading future inputs x[L .. L+Tf-2].
  Tf = s.future
  S = T + 1 if s.num_decoder_samples == 0 else s.num_decoder_samples
  starts = (jnp.broadcast_to(jnp.arange(T + 1), (B, T + 1)) if S == T + 1
            else jax.random.randint(r_dec, (B, S), 0, T + 1))
  x_pad = jnp.concatenate([x, jnp.full((B, Tf), -1, x.dtype)], axis=1)
  y_pad = jnp.concatenate([jnp.full((B, 1), -1, y.dtype), y, jnp.full((B, Tf), -1, y.dtype)], axis=1)
  future = _windows(x_pad, starts, Tf - 1).reshape(B * S, Tf - 1)
  targets = _windows(y_pad, starts, Tf).reshape(B * S, Tf)
  m_dec = jnp.take_along_axis(mems, starts[:, :, None, None], axis=1).reshape(B * S, K, D)
  dec, dec0 = losses.decoder_loss(nets.decode(params, m_dec, future), targets, s.gamma)

  unif = losses.uniformity_loss(mems.reshape(-1, D), r_unif, s.unif_samples, s.unif_t)
  total = _total(s, dec, dyn, unif)
  return total, dict(loss=total, loss_dec=dec, loss_dec0=dec0, loss_dyn=dyn, loss_unif=unif)


def smt_losses(nets: Networks, params, batch, rng, smt_config):
  """(total, metrics) for config.smt.mode."""
  fn = window_losses if smt_config.mode == 'window' else parallel_losses
  return fn(nets, params, batch, rng, smt_config)


def _summary(scores: dict, prefix: str) -> dict:
  n = jnp.maximum(jnp.sum(scores['valid']), 1)
  return {f'{prefix}_loss': jnp.sum(scores['ce']) / n, f'{prefix}_accuracy': jnp.sum(scores['correct']) / n}


def rnn_metrics(nets: Networks, params, batch, teacher_causal: bool = True):
  """Held-out sequence metrics (nats per target; accuracy on y >= 0), from smtjax.inference:

  rnn_only_*: the RNN reads the whole sequence from its initial memory (lax.scan rollout), and its
  readout predicts y_t after x_0..x_t.
  teacher_*: the decoder's prediction of y_t from the encoder memory of x_0..x_t (an upper bound);
  computed when the encoder is causal (one prefix pass).
  """
  x, y = batch['x'], batch['y']
  out = _summary(inference.rnn_only(nets, params, x, y), 'rnn_only')
  if teacher_causal:
    out.update(_summary(inference.teacher_scores(nets, params, x, y), 'teacher'))
  return out
