"""The SMT objective (method.md §4) in two modes.

- `window`: the published setting, one transition per sequence. With T >= Tc + Tf:
  m_t = E(x[0:Tc]), m_{t+1} = E(x[1:Tc+1]), RNN input x[Tc], decoder future inputs x[Tc:Tc+Tf-1],
  decoder targets y[Tc-1:Tc+Tf-1].
- `parallel`: one causal encoder pass gives the memory of every prefix, mems[:, L] = E(x[:L]) for
  L = 0..T (L = 0 is the initial memory m_{-1}). The dynamics loss covers the pairs
  (mems[:, L], x[:, L]) -> mems[:, L+1] for all L (or `num_transitions` sampled per sequence), the
  decoder loss a sampled set of memories with up to Tf future targets each, and the uniformity loss
  all memory tokens of the batch.
Both return (total, metrics) with the metric names loss, loss_dec, loss_dec0, loss_dyn, loss_unif.

Drift-robust options of the parallel mode (each off by default, each still time-parallel; docs/method.md):
- `smt.rollout_steps` n > 1: from every prefix memory m_L at once the cell rolls n steps on the true
  inputs (a short lax.scan over n, batched over all B*(T+1-n) starts) and each rolled memory is matched to
  the teacher's m_{L+j} (one MSE pooled over the n steps); `smt.rollout_detach` feeds each step a detached
  input from step 2 on (one-step gradients on self-generated inputs: the pushforward trick / parallel
  scheduled sampling);
  `smt.rollout_decode` > 0 adds the readout's cross-entropy on the rolled memories (`loss_roll_dec`; with n = 1
  on the one-step predictions). Besides the cell it trains, through the start memory, the encoder (unless
  `dynamics_gradient='rnn_only'`) and, with `rollout_decode_readout='train'`, the readout, which is the
  teacher's decoder: then the teacher's own scores move with it.
- `smt.memory_noise` sigma > 0: the teacher memory fed to the cell is rms_norm(m + sigma * eps), the target
  stays clean (training noise against drift); `memory_noise_mode='matched'` scales sigma by the RMS of the
  cell's current one-step error (detached), so the noise looks like the RNN's own mistakes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from smtjax import config as config_lib
from smtjax import layers, losses
from smtjax.models import Networks
from smtjax.windows import decoder_windows, gather_memories, windows


def _total(s, dec, dyn, unif):
  return s.coef_dec * dec + s.coef_dyn * dyn + s.coef_unif * unif


def _teacher(mem, s):
  """Memories seen through the teacher's trainability: frozen teacher -> no gradient into the encoder."""
  return jax.lax.stop_gradient(mem) if s.trainable == 'rnn' else mem


def _dynamics(nets: Networks, params, m_in, x_in, m_out, config):
  """L_dyn = MSE(U(m_in, x_in), m_out) over pairs with a real input, with the gradient routed by
  smt.dynamics_gradient: 'both' (into the RNN and both teacher memories), 'stop_target' (m_out detached),
  'rnn_only' (m_in and m_out detached: no dynamics gradient reaches the teacher)."""
  mode = config_lib.dynamics_gradient(config)
  if mode == 'rnn_only':
    m_in = jax.lax.stop_gradient(m_in)
  pred = nets.step(params, m_in, x_in)
  return losses.dynamics_loss(pred, m_out, mask=x_in >= 0, detach_target=mode in ('stop_target', 'rnn_only'))


def window_losses(nets: Networks, params, batch, rng, config):
  """One transition per sequence (the public implementation's windowing). The uniformity loss covers the
  tokens of m_t only, as in the public code."""
  s = config.smt
  x, y = batch['x'], batch['y']
  B = x.shape[0]
  Tc, Tf = s.context, s.future
  # Both windows through the encoder in one call.
  mems = _teacher(nets.encode(params, jnp.concatenate([x[:, :Tc], x[:, 1:Tc + 1]], axis=0)), s)
  m_t, m_next = mems[:B], mems[B:]
  dyn = _dynamics(nets, params, m_t, x[:, Tc], m_next, config)
  future, targets = decoder_windows(x, y, jnp.array([Tc]), Tf)
  dec, dec0 = losses.decoder_loss(nets.decode(params, m_t, future), targets, s.gamma)
  unif = losses.uniformity_loss(m_t.reshape(-1, m_t.shape[-1]), rng, s.unif_samples, s.unif_t)
  total = _total(s, dec, dyn, unif)
  return total, dict(loss=total, loss_dec=dec, loss_dec0=dec0, loss_dyn=dyn, loss_unif=unif)


def transition_indices(rng, B: int, T: int, num_transitions: int, steps: int = 1):
  """Prefix lengths L where the dynamics rollouts of `steps` transitions start, per sequence [B, N]: all of
  0..T-steps, or a uniform sample of `num_transitions` (0 or T = all)."""
  if num_transitions in (0, T):
    return jnp.broadcast_to(jnp.arange(T + 1 - steps), (B, T + 1 - steps))
  return jax.random.randint(rng, (B, num_transitions), 0, T + 1 - steps)


def perturb_memory(mem_NxKxD, sigma, rng):
  """rms_norm(m + sigma * eps), eps ~ N(0, 1): a noisy memory on the same RMS-1 shell as the encoder's."""
  eps = jax.random.normal(rng, mem_NxKxD.shape, jnp.float32)
  return layers.rms_norm(mem_NxKxD + sigma * eps)


def _noise_scale(nets: Networks, params, m_in, x_in, m_out, s):
  """sigma of the memory noise: smt.memory_noise, times (mode 'matched') the RMS of the cell's current
  one-step error on these pairs (detached: the noise is data, not a path for gradients)."""
  if s.memory_noise_mode == 'fixed':
    return jnp.float32(s.memory_noise)
  err = losses.dynamics_loss(nets.step(params, m_in, x_in), m_out, mask=x_in >= 0)
  return s.memory_noise * jnp.sqrt(jax.lax.stop_gradient(err))


def _roll(nets: Networks, params, m0, xs_Nxn, detach: bool):
  """The cell rolled n steps from m0 [N, K, D] on xs [N, n]: memories [N, n, K, D]. The first step reads
  m0 (gradients as in one-step SMT); the others their own predictions, detached when `detach`."""
  def body(m, x_N):
    m = nets.step(params, jax.lax.stop_gradient(m) if detach else m, x_N)
    return m, m

  m1 = nets.step(params, m0, xs_Nxn[:, 0])
  if xs_Nxn.shape[1] == 1:
    return m1[:, None]
  _, rest = jax.lax.scan(body, m1, xs_Nxn[:, 1:].T)  # [n-1, N, K, D]
  return jnp.concatenate([m1[:, None], jnp.swapaxes(rest, 0, 1)], axis=1)


def rollout_dynamics(nets: Networks, params, mems, x, y, starts_BxN, config, rng):
  """The dynamics loss of n = smt.rollout_steps cell steps from the teacher memories mems[:, L] (L in
  starts), on the true inputs x[:, L..L+n-1], each rolled memory matched to mems[:, L+j+1] (masked MSE
  pooled over all steps and starts). mems: [B, T+1, K, D]. Returns (loss_dyn, extra metrics)."""
  s = config.smt
  B, N = starts_BxN.shape
  n = s.rollout_steps
  pos_BxNxn = starts_BxN[..., None] + jnp.arange(n)  # input positions L + j
  m0 = gather_memories(mems, starts_BxN)  # [B*N, K, D]
  xs = windows(x, starts_BxN, n).reshape(B * N, n)
  targets = gather_memories(mems, (pos_BxNxn + 1).reshape(B, N * n)).reshape((B * N, n) + mems.shape[2:])
  extra = {}
  if s.memory_noise > 0:
    sigma = _noise_scale(nets, params, m0, xs[:, 0], targets[:, 0], s)
    m0 = perturb_memory(m0, sigma, rng)
    extra['mem_noise_std'] = sigma
  mode = config_lib.dynamics_gradient(config)  # routes the teacher's share of the gradient as in one-step SMT
  if mode == 'rnn_only':
    m0 = jax.lax.stop_gradient(m0)
  preds = _roll(nets, params, m0, xs, s.rollout_detach)  # [B*N, n, K, D]
  flat = lambda a: a.reshape((B * N * n,) + a.shape[2:])
  dyn = losses.dynamics_loss(flat(preds), flat(targets), mask=flat(xs) >= 0,
                             detach_target=mode in ('stop_target', 'rnn_only'))
  if s.rollout_decode > 0:
    # The memory after reading x[:L+j+1] predicts y[L+j]: the RNN's readout on its own rolled memories.
    ys = windows(y, starts_BxN, n).reshape(B * N * n)
    readout_params = params if s.rollout_decode_readout == 'train' else dict(
        params, decoder=jax.lax.stop_gradient(params['decoder']))
    extra['loss_roll_dec'] = losses.mean_cross_entropy(nets.readout(readout_params, flat(preds)), ys)
  return dyn, extra


def has_drift_options(config) -> bool:
  """Whether the SMT objective departs from the one-step loss on clean teacher memories."""
  s = config.smt
  return config.method == 'smt' and (s.rollout_steps > 1 or s.memory_noise > 0 or s.rollout_decode > 0)


def one_step(config):
  """`config` with the drift-robust options off: the plain one-step SMT objective."""
  c = config.copy_and_resolve_references()
  c.smt.rollout_steps, c.smt.rollout_detach, c.smt.rollout_decode, c.smt.memory_noise = 1, False, 0.0, 0.0
  return c


def parallel_losses(nets: Networks, params, batch, rng, config):
  """Every memory transition of every sequence from one encoder pass (method.md §4, last part)."""
  s = config.smt
  x, y = batch['x'], batch['y']
  B, T = x.shape
  r_dyn, r_dec, r_unif = jax.random.split(rng, 3)
  mems = _teacher(nets.prefix_memories(params, x), s)  # [B, T+1, K, D]

  # Dynamics: (m_{L-1}, x_L) -> m_L, i.e. mems[:, L], x[:, L] -> mems[:, L+1] (rolled n steps: see above).
  L = transition_indices(r_dyn, B, T, s.num_transitions, s.rollout_steps)  # [B, N]
  dyn, extra = rollout_dynamics(nets, params, mems, x, y, L, config, jax.random.fold_in(r_dyn, 1))

  # Decoder: the memory after L tokens predicts y[L-1 .. L+Tf-2] reading future inputs x[L .. L+Tf-2].
  S = T + 1 if s.num_decoder_samples == 0 else s.num_decoder_samples
  starts = (jnp.broadcast_to(jnp.arange(T + 1), (B, T + 1)) if S == T + 1
            else jax.random.randint(r_dec, (B, S), 0, T + 1))
  future, targets = decoder_windows(x, y, starts, s.future)
  dec, dec0 = losses.decoder_loss(nets.decode(params, gather_memories(mems, starts), future), targets, s.gamma)

  unif = losses.uniformity_loss(mems.reshape(-1, mems.shape[-1]), r_unif, s.unif_samples, s.unif_t)
  total = _total(s, dec, dyn, unif)
  if 'loss_roll_dec' in extra:
    total = total + s.rollout_decode * extra['loss_roll_dec']
  return total, dict(loss=total, loss_dec=dec, loss_dec0=dec0, loss_dyn=dyn, loss_unif=unif, **extra)


def smt_losses(nets: Networks, params, batch, rng, config):
  """(total, metrics) of config.smt.mode; the signature every objective shares."""
  fn = window_losses if config.smt.mode == 'window' else parallel_losses
  return fn(nets, params, batch, rng, config)
