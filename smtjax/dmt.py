"""DMT (DAgger Memory Training, method.md §5): fine-tune the RNN on its own rolled-out memories.

The teacher (encoder and decoder) is frozen. With sequences of at least Tc + Td tokens (Tc + Td + Tf
published; future targets past the end count as missing):
- teacher memories at rollout steps 0, k, 2k, ..., Td, all in one batched pass: for a window-mode
  teacher the sliding windows x[s:s+Tc]; for a parallel-mode teacher the prefix memories E(x[:Tc+s])
  (one causal pass);
- the RNN starts from the teacher's memory at step 0 and rolls out Td steps on the true inputs x[Tc+s]
  with `lax.scan`, each step from its own previous memory (on-policy states, as in DAgger);
- losses: MSE to the teacher memory every k-th step (coef_mem), readout cross-entropy on y[Tc+s-1] from
  the detached memory r_s at every step s = 0..Td (coef_readout; trains the readout copy params['readout']), the frozen
  decoder's Tf-step prediction from the RNN memory every k-th step (coef_dec) and uniformity of the RNN
  memories (coef_unif).
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


def dmt_losses(nets: Networks, params, batch, rng, config, probe=None):
  """(total, metrics): loss, loss_mem, loss_readout, loss_dec, loss_unif."""
  d = config.dmt
  x, y = batch['x'], batch['y']
  B = x.shape[0]
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

  # Frozen decoder on the RNN's memories r_s (s = k, 2k, ...): future inputs x[Tc+s:], targets y[Tc+s-1:].
  S = at_k.shape[1]
  starts = Tc + jnp.arange(k, Td + 1, k)
  x_pad = jnp.concatenate([x, jnp.full((B, Tf), -1, x.dtype)], axis=1)
  y_pad = jnp.concatenate([y, jnp.full((B, Tf), -1, y.dtype)], axis=1)
  fut = _gather_windows(x_pad, starts, Tf - 1)
  tgt = _gather_windows(y_pad, starts - 1, Tf)
  dec_logits = nets.decode(tparams, at_k.reshape(B * S, K, D), fut.reshape(B * S, Tf - 1))
  loss_dec, loss_dec0 = losses.decoder_loss(dec_logits, tgt.reshape(B * S, Tf), config.smt.gamma)

  loss_unif = losses.uniformity_loss(mems.reshape(-1, D), rng, config.smt.unif_samples, config.smt.unif_t)
  total = d.coef_mem * loss_mem + d.coef_readout * loss_readout + d.coef_dec * loss_dec + d.coef_unif * loss_unif
  return total, dict(loss=total, loss_mem=loss_mem, loss_readout=loss_readout, loss_dec=loss_dec,
                     loss_dec0=loss_dec0, loss_unif=loss_unif)
