"""DMT (DAgger Memory Training, method.md §5): fine-tune the RNN on its own rolled-out memories.

The teacher (encoder and decoder) is frozen. With sequences of at least Tc + Td tokens (Tc + Td + Tf
published; future targets past the end count as missing):
- teacher memories at rollout steps 0, k, 2k, ..., Td, all in one batched pass: for a window-mode
  teacher the sliding windows x[s:s+Tc]; for a parallel-mode teacher the prefix memories E(x[:Tc+s])
  (one causal pass);
- the RNN starts from the teacher's memory at step 0 and rolls out Td steps on the true inputs x[Tc+s]
  with `lax.scan`, each step from its own previous memory (on-policy states, as in DAgger);
- the trained objective (the public code's effective one): MSE to the teacher memory every k-th step
  (coef_mem) plus readout cross-entropy on y[Tc+s-1] from the detached memory r_s at every step s = 0..Td
  (coef_readout; trains the readout copy params['readout']);
- the decoder and uniformity terms, by dmt.decoder_term / dmt.uniformity_term: 'teacher' (published) computes
  them on the teacher's memories at steps 0, k, ..., Td-k, as the public code does, and only logs them
  (loss_dec_teacher, loss_dec0_teacher, loss_unif_teacher: constants of the frozen teacher); 'rnn' (an smtjax
  extension) adds the frozen decoder's Tf-step prediction from the RNN memory every k-th step (coef_dec,
  loss_dec) and the uniformity of the RNN's memory tokens (coef_unif, loss_unif) to the objective.
`backprop_through_rollout=False` (published): each step's input memory is detached, so step s's loss
reaches the parameters only through step s (one-step gradients). True: full backpropagation through the
rollout.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from smtjax import losses
from smtjax.models import Networks
from smtjax.windows import decoder_windows, windows


def teacher_memories(nets: Networks, params, x, Tc: int, Td: int, every: int, prefix: bool):
  """Frozen teacher memories at rollout steps 0, k, ..., [B, Td//k + 1, K, D], in one pass."""
  steps = jnp.arange(0, Td + 1, every)
  if prefix:
    mems = nets.prefix_memories(params, x[:, :Tc + Td])[:, Tc + steps]
  else:
    B = x.shape[0]
    mems = nets.encode(params, windows(x, steps, Tc).reshape(-1, Tc))  # x[s:s+Tc] for every step s
    mems = mems.reshape((B, len(steps)) + mems.shape[1:])
  return jax.lax.stop_gradient(mems)


def _decoder_terms(nets: Networks, params, mems_BxSxKxD, x, y, read_S, Tf: int, gamma: float):
  """Decoder loss of memories that have read read_S[s] tokens (future targets past the end: missing).
  Returns (L_dec, L_dec0)."""
  B, S, K, D = mems_BxSxKxD.shape
  future, targets = decoder_windows(x, y, read_S, Tf)
  return losses.decoder_loss(nets.decode(params, mems_BxSxKxD.reshape(B * S, K, D), future), targets, gamma)


def _teacher_terms(nets: Networks, tparams, enc, x, y, read_S, rng, config):
  """The decoder and uniformity terms on the encoder's memories, logged as the public code does (constants
  of the frozen teacher, no gradient)."""
  s = config.smt
  dec_t, dec0_t = _decoder_terms(nets, tparams, enc, x, y, read_S, s.future, s.gamma)
  unif_t = losses.uniformity_loss(enc.reshape(enc.shape[0] * enc.shape[1], -1), rng, s.unif_samples, s.unif_t)
  return jax.lax.stop_gradient(dict(loss_dec_teacher=dec_t, loss_dec0_teacher=dec0_t, loss_unif_teacher=unif_t))


def dmt_losses(nets: Networks, params, batch, rng, config):
  """(total, metrics): loss, loss_mem, loss_readout, loss_dec_teacher, loss_dec0_teacher, loss_unif_teacher,
  and loss_dec, loss_dec0 / loss_unif when dmt.decoder_term / uniformity_term is 'rnn'."""
  d, s = config.dmt, config.smt
  x, y = batch['x'], batch['y']
  Tc, Td, k = d.context, d.rollout, d.every
  frozen = jax.lax.stop_gradient  # the teacher's parameters are frozen; its outputs are targets
  tparams = {'encoder': frozen(params['encoder']), 'decoder': frozen(params['decoder'])}
  targets = teacher_memories(nets, tparams, x, Tc, Td, k, prefix=s.mode == 'parallel')
  # without backprop_through_rollout every step reads a detached memory (the first included), so step t's
  # output depends on the parameters only through step t
  cut = int(not d.backprop_through_rollout)
  mems = nets.rollout(params, targets[:, 0], x[:, Tc:Tc + Td], truncation=cut, detach_initial=bool(cut))  # r_1..r_Td
  K, D = mems.shape[2:]

  at_k = mems[:, k - 1::k]  # r_k, r_2k, ..., r_Td
  loss_mem = losses.dynamics_loss(at_k.reshape(-1, K, D), targets[:, 1:].reshape(-1, K, D))
  # Readout on detached memories r_0..r_Td: r_s predicts y[Tc+s-1].
  seen = jnp.concatenate([targets[:, :1], mems], axis=1)
  loss_readout = losses.mean_cross_entropy(nets.readout_all(params, frozen(seen)), y[:, Tc - 1:Tc + Td])
  total = d.coef_mem * loss_mem + d.coef_readout * loss_readout

  r_teacher, r_rnn = jax.random.split(rng)
  metrics = dict(loss_mem=loss_mem, loss_readout=loss_readout)
  metrics.update(_teacher_terms(nets, tparams, targets[:, :-1], x, y, Tc + jnp.arange(0, Td, k), r_teacher, config))
  if d.decoder_term == 'rnn':  # smtjax extension: the frozen decoder reads r_k, r_2k, ...
    loss_dec, loss_dec0 = _decoder_terms(nets, tparams, at_k, x, y, Tc + jnp.arange(k, Td + 1, k), s.future, s.gamma)
    total = total + d.coef_dec * loss_dec
    metrics.update(loss_dec=loss_dec, loss_dec0=loss_dec0)
  if d.uniformity_term == 'rnn':  # smtjax extension: spread the RNN's memory tokens
    loss_unif = losses.uniformity_loss(mems.reshape(-1, D), r_rnn, s.unif_samples, s.unif_t)
    total = total + d.coef_unif * loss_unif
    metrics.update(loss_unif=loss_unif)
  return total, dict(metrics, loss=total)
