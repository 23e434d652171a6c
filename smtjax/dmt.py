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


def rollout(nets: Networks, params, mem0, x_BxTd, backprop_through_rollout: bool, probe=None):
  """RNN memories after each of Td inputs, [B, Td, K, D]. `probe` [Td, B, K, D] (zeros) is added to
  each produced memory; gradients with respect to it expose which steps a loss depends on (tests)."""
  Td = x_BxTd.shape[1]
  probe = jnp.zeros((Td,) + mem0.shape, jnp.float32) if probe is None else probe

  def body(mem, inp):
    x_B, p = inp
    if not backprop_through_rollout:
      mem = jax.lax.stop_gradient(mem)
    new = nets.step(params, mem, x_B) + p
    return new, new

  _, mems = jax.lax.scan(body, mem0, (jnp.swapaxes(x_BxTd, 0, 1), probe))
  return jnp.swapaxes(mems, 0, 1)


def _gather_windows(a_BxN, starts_S, length: int):
  """a[:, s:s+length] for each start s -> [B, S, length]."""
  return a_BxN[:, starts_S[:, None] + jnp.arange(length)]


def teacher_memories(nets: Networks, params, x, Tc: int, Td: int, every: int, prefix: bool):
  """Frozen teacher memories at rollout steps 0, k, ..., [B, Td//k + 1, K, D], in one pass."""
  steps = jnp.arange(0, Td + 1, every)
  if prefix:
    mems = nets.prefix_memories(params, x[:, :Tc + Td])[:, Tc + steps]
  else:
    B = x.shape[0]
    windows = _gather_windows(x, steps, Tc)  # [B, S, Tc]: x[s:s+Tc]
    mems = nets.encode(params, windows.reshape(-1, Tc)).reshape((B, len(steps)) + (nets.num_mem_tokens, nets.mem_dim))
  return jax.lax.stop_gradient(mems)


def _decoder_terms(nets: Networks, params, mems_BxSxKxD, x, y, read_S, Tf: int, gamma: float):
  """Decoder loss of memories that have read read_S[s] tokens: future inputs x[n:n+Tf-1], targets
  y[n-1:n+Tf-1] (past the end: missing). Returns (L_dec, L_dec0)."""
  B, S, K, D = mems_BxSxKxD.shape
  x_pad = jnp.concatenate([x, jnp.full((B, Tf), -1, x.dtype)], axis=1)
  y_pad = jnp.concatenate([y, jnp.full((B, Tf), -1, y.dtype)], axis=1)
  fut = _gather_windows(x_pad, read_S, Tf - 1)
  tgt = _gather_windows(y_pad, read_S - 1, Tf)
  logits = nets.decode(params, mems_BxSxKxD.reshape(B * S, K, D), fut.reshape(B * S, Tf - 1))
  return losses.decoder_loss(logits, tgt.reshape(B * S, Tf), gamma)


def dmt_losses(nets: Networks, params, batch, rng, config, probe=None):
  """(total, metrics): loss, loss_mem, loss_readout, loss_dec_teacher, loss_dec0_teacher, loss_unif_teacher,
  and loss_dec, loss_dec0 / loss_unif when dmt.decoder_term / uniformity_term is 'rnn'."""
  d = config.dmt
  x, y = batch['x'], batch['y']
  Tc, Td, Tf, k = d.context, d.rollout, config.smt.future, d.every
  frozen = jax.lax.stop_gradient  # the teacher's parameters are frozen; its outputs are targets
  tparams = {'encoder': frozen(params['encoder']), 'decoder': frozen(params['decoder'])}
  targets = teacher_memories(nets, tparams, x, Tc, Td, k, prefix=config.smt.mode == 'parallel')
  mems = rollout(nets, params, targets[:, 0], x[:, Tc:Tc + Td], d.backprop_through_rollout, probe)  # r_1..r_Td
  K, D = mems.shape[2:]

  at_k = mems[:, k - 1::k]  # r_k, r_2k, ..., r_Td
  loss_mem = losses.dynamics_loss(at_k.reshape(-1, K, D), targets[:, 1:].reshape(-1, K, D))

  # Readout on detached memories r_0..r_Td: r_s predicts y[Tc+s-1].
  seen = jnp.concatenate([targets[:, :1], mems], axis=1)
  logits = nets.readout_all(params, frozen(seen))
  ce, valid = losses.token_cross_entropy(logits, y[:, Tc - 1:Tc + Td])
  loss_readout = jnp.sum(ce) / jnp.maximum(jnp.sum(valid), 1)

  total = d.coef_mem * loss_mem + d.coef_readout * loss_readout
  metrics = dict(loss_mem=loss_mem, loss_readout=loss_readout)
  r_teacher, r_rnn = jax.random.split(rng)
  s = config.smt

  # Teacher side, logged as the public code does: the frozen decoder on the encoder's memories at steps
  # 0, k, ..., Td-k, and uniformity over those whole memories (Z-vectors). No gradient: teacher outputs.
  enc = targets[:, :-1]
  dec_t, dec0_t = _decoder_terms(nets, tparams, enc, x, y, Tc + jnp.arange(0, Td, k), Tf, s.gamma)
  unif_t = losses.uniformity_loss(enc.reshape(-1, K * D), r_teacher, s.unif_samples, s.unif_t)
  metrics.update(jax.lax.stop_gradient(dict(loss_dec_teacher=dec_t, loss_dec0_teacher=dec0_t,
                                            loss_unif_teacher=unif_t)))

  if d.get('decoder_term', 'teacher') == 'rnn':  # smtjax extension: the frozen decoder reads r_k, r_2k, ...
    loss_dec, loss_dec0 = _decoder_terms(nets, tparams, at_k, x, y, Tc + jnp.arange(k, Td + 1, k), Tf, s.gamma)
    total = total + d.coef_dec * loss_dec
    metrics.update(loss_dec=loss_dec, loss_dec0=loss_dec0)
  if d.get('uniformity_term', 'teacher') == 'rnn':  # smtjax extension: spread the RNN's memory tokens
    loss_unif = losses.uniformity_loss(mems.reshape(-1, D), r_rnn, s.unif_samples, s.unif_t)
    total = total + d.coef_unif * loss_unif
    metrics.update(loss_unif=loss_unif)
  return total, dict(metrics, loss=total)
