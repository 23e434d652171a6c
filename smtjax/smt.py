"""The SMT objective (method.md §4) in two modes.

- `window`: the published setting, one transition per sequence. With T >= Tc + Tf:
  m_t = E(x[0:Tc]), m_{t+1} = E(x[1:Tc+1]), RNN input x[Tc], decoder future inputs x[Tc:Tc+Tf-1],
  decoder targets y[Tc-1:Tc+Tf-1].
- `parallel`: one causal encoder pass gives the memory of every prefix, mems[:, L] = E(x[:L]) for
  L = 0..T (L = 0 is the initial memory m_{-1}). The dynamics loss covers the pairs
  (mems[:, L], x[:, L]) -> mems[:, L+1] for all L (or `num_transitions` sampled per sequence), the
  decoder loss a sampled set of memories with up to Tf future targets each, and the uniformity loss
  the memory tokens of the batch, each memory once (the decoded ones when the memories are sampled).
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
import numpy as np

from smtjax import layers, losses
from smtjax.models import Networks
from smtjax.windows import decoder_windows


def _total_loss(s, dec, dyn, unif):
  return s.coef_dec * dec + s.coef_dyn * dyn + s.coef_unif * unif


def _teacher(mem, s):
  """Memories seen through the teacher's trainability: frozen teacher -> no gradient into the encoder."""
  return jax.lax.stop_gradient(mem) if s.trainable == 'rnn' else mem


def _dynamics(nets: Networks, params, m_in, x_in, m_out, config):
  """L_dyn = MSE(U(m_in, x_in), m_out) over pairs with a real input, with the gradient routed by
  smt.dynamics_gradient: 'both' (into the RNN and both teacher memories), 'stop_target' (m_out detached),
  'rnn_only' (m_in and m_out detached: no dynamics gradient reaches the teacher)."""
  mode = config.smt.dynamics_gradient
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
  total = _total_loss(s, dec, dyn, unif)
  return total, dict(loss=total, loss_dec=dec, loss_dec0=dec0, loss_dyn=dyn, loss_unif=unif)


def sample_positions(rng, B: int, G: int, S: int):
  """Positions 0..G-1 sampled per sequence by stratified sampling: (idx [B, S], weight [S]). The range is cut
  into S strata of near-equal size and one position drawn uniformly in each, so sum_s weight[s] * f(idx[b, s])
  (weight = the stratum's size) is an unbiased estimate of sum_p f(p) for any f, with less variance than S
  independent draws. S = 0 or S >= G: every position once, weight 1 (the exact sum)."""
  if S == 0 or S >= G:
    return jnp.broadcast_to(jnp.arange(G), (B, G)), jnp.ones((G,), jnp.float32)
  edges = (np.arange(S + 1) * G) // S
  return jax.random.randint(rng, (B, S), edges[:-1], edges[1:]), jnp.asarray(np.diff(edges), jnp.float32)


def pair_counts(T: int, n: int) -> np.ndarray:
  """[T]: how many (start L in 0..T-n, step j in 0..n-1) read input position p = L + j."""
  p = np.arange(T)
  return np.minimum(p, n - 1) - np.maximum(0, p - (T - n)) + 1


def target_weights(T: int, future: int, gamma: float) -> np.ndarray:
  """[T]: the total decoder weight gamma**j of target y[t] over every memory L = 0..T that predicts it at
  future position j = t + 1 - L < future."""
  w = np.cumsum(gamma ** np.arange(future, dtype=np.float64))
  return w[np.minimum(np.arange(T) + 1, future - 1)]


def _estimate(values_BxS, weight_S, total):
  """sum_{b, s} weight[s] * values[b, s, ...] / total: with stratified positions (`sample_positions`) and
  `total` the sum of the weights of every position, an unbiased estimate of the mean over all positions."""
  v = values_BxS.reshape(values_BxS.shape[:2] + (-1,)).sum(-1)
  return jnp.sum(v * weight_S) / jnp.maximum(total, 1e-12)


def _total(valid_BxT, per_position):
  return jnp.sum(valid_BxT.astype(jnp.float32) * jnp.asarray(per_position, jnp.float32))


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


def rollout_dynamics(nets: Networks, params, m0_BxN, targets_BxNxn, xs_BxNxn, config, rng):
  """n = smt.rollout_steps cell steps from the teacher memories m0 [B, N, K, D] on the true inputs xs
  [B, N, n], each rolled memory compared with the teacher's targets [B, N, n, K, D] (the memory after
  L + j + 1 tokens for a start L). Returns (squared errors [B, N, n] (mean over K, D), rolled memories
  [B, N, n, K, D], extra metrics); the caller masks and pools them."""
  s = config.smt
  B, N, n = xs_BxNxn.shape
  KD = m0_BxN.shape[2:]
  m0, xs = m0_BxN.reshape((B * N,) + KD), xs_BxNxn.reshape(B * N, n)
  targets = targets_BxNxn.reshape((B * N, n) + KD)
  extra = {}
  if s.memory_noise > 0:
    sigma = _noise_scale(nets, params, m0, xs[:, 0], targets[:, 0], s)
    m0 = perturb_memory(m0, sigma, rng)
    extra['mem_noise_std'] = sigma
  mode = config.smt.dynamics_gradient  # routes the teacher's share of the gradient as in one-step SMT
  if mode == 'rnn_only':
    m0 = jax.lax.stop_gradient(m0)
  if mode in ('stop_target', 'rnn_only'):
    targets = jax.lax.stop_gradient(targets)
  # step 0 reads the teacher's m0 (gradients as in one-step SMT); the others their own predictions, detached
  # at every step when smt.rollout_detach
  preds = nets.rollout(params, m0, xs, truncation=int(s.rollout_detach))  # [B*N, n, K, D]
  se = jnp.mean(jnp.square(preds - targets.astype(jnp.float32)), axis=(-2, -1))
  return se.reshape(B, N, n), preds.reshape((B, N, n) + KD), extra


def has_drift_options(config) -> bool:
  """Whether the SMT objective departs from the one-step loss on clean teacher memories."""
  s = config.smt
  return config.method == 'smt' and (s.rollout_steps > 1 or s.memory_noise > 0 or s.rollout_decode > 0)


def one_step(config):
  """`config` with the drift-robust options off: the plain one-step SMT objective."""
  c = config.copy_and_resolve_references()
  c.smt.rollout_steps, c.smt.rollout_detach, c.smt.rollout_decode, c.smt.memory_noise = 1, False, 0.0, 0.0
  return c


def _memories(nets: Networks, params, x, lengths_BxM):
  """(the memories of the prefixes of lengths [B, M], every memory computed): only those prefixes' register
  groups when they are fewer than the T+1 prefixes, else every prefix once, then gathered."""
  if lengths_BxM.shape[1] < x.shape[1] + 1:
    mems = nets.prefix_memories(params, x, lengths_BxM)
    return mems, mems
  every = nets.prefix_memories(params, x)  # [B, T+1, K, D]
  return jnp.take_along_axis(every, lengths_BxM[:, :, None, None], axis=1), every


def parallel_losses(nets: Networks, params, batch, rng, config):
  """The memory transitions and decoded memories of every sequence from one encoder pass (method.md §4, last
  part), sampled per sequence (`sample_positions`): the rollouts of smt.num_transitions starts and the futures
  of smt.num_decoder_samples memories, each an unbiased estimate of its loss over all of them (0: all), and the
  encoder computes only the memories they read."""
  s = config.smt
  x, y = batch['x'], batch['y']
  B, T = x.shape
  n = s.rollout_steps
  r_dyn, r_dec, r_unif = jax.random.split(rng, 3)
  starts, w_dyn = sample_positions(r_dyn, B, T + 1 - n, s.num_transitions)  # [B, N]: rollouts from m[L]
  reads, w_dec = sample_positions(r_dec, B, T + 1, s.num_decoder_samples)  # [B, S]: decoded memories
  N, S = starts.shape[1], reads.shape[1]
  # Memory after L tokens for each start (L), its rollout targets (L+1..L+n) and each decoded memory.
  lengths = jnp.concatenate([starts + j for j in range(n + 1)] + [reads], axis=1)
  mems, computed = _memories(nets, params, x, lengths)
  mems, computed = _teacher(mems, s), _teacher(computed, s)
  KD = mems.shape[2:]

  # Dynamics: (m_{L-1}, x_L) -> m_L, i.e. m[L], x[L] -> m[L+1] (rolled n steps: see above).
  m0 = mems[:, :N]
  targets = jnp.swapaxes(mems[:, N:N * (n + 1)].reshape((B, n, N) + KD), 1, 2)  # [B, N, n, K, D]
  pos = starts[..., None] + jnp.arange(n)  # [B, N, n]: input positions L + j
  xs = jnp.take_along_axis(x, pos.reshape(B, N * n), axis=1).reshape(B, N, n)
  se, preds, extra = rollout_dynamics(nets, params, m0, targets, xs, config, jax.random.fold_in(r_dyn, 1))
  counts = pair_counts(T, n)
  dyn = _estimate(se * (xs >= 0), w_dyn, _total(x >= 0, counts))
  if s.rollout_decode > 0:
    # The memory after reading x[:L+j+1] predicts y[L+j]: the RNN's readout on its own rolled memories.
    ys = jnp.take_along_axis(y, pos.reshape(B, N * n), axis=1).reshape(B, N, n)
    readout_params = params if s.rollout_decode_readout == 'train' else dict(
        params, decoder=jax.lax.stop_gradient(params['decoder']))
    ce, valid = losses.token_cross_entropy(nets.readout(readout_params, preds.reshape((-1,) + KD)), ys.reshape(-1))
    extra['loss_roll_dec'] = _estimate((ce * valid).reshape(B, N, n), w_dyn, _total(y >= 0, counts))

  # Decoder: the memory after L tokens predicts y[L-1 .. L+Tf-2] reading future inputs x[L .. L+Tf-2].
  Tf = s.future
  future, tgt = decoder_windows(x, y, reads, Tf)  # [B*S, Tf-1], [B*S, Tf]
  ce, valid = losses.token_cross_entropy(nets.decode(params, mems[:, N * (n + 1):].reshape((B * S,) + KD), future), tgt)
  ce = (ce * valid * (s.gamma ** jnp.arange(Tf, dtype=jnp.float32))).reshape(B, S, Tf)
  dec = _estimate(ce, w_dec, _total(y >= 0, target_weights(T, Tf, s.gamma)))
  dec0 = _estimate(ce[..., 0], w_dec, _total(y >= 0, np.ones(T)))

  # Uniformity over distinct memories: every prefix's when all were computed, else the decoded ones (distinct
  # positions of each sequence); the sampled starts' memories and their targets would repeat some of them.
  distinct = computed if lengths.shape[1] >= T + 1 else mems[:, N * (n + 1):]
  unif = losses.uniformity_loss(distinct.reshape(-1, KD[-1]), r_unif, s.unif_samples, s.unif_t)
  total = _total_loss(s, dec, dyn, unif)
  if 'loss_roll_dec' in extra:
    total = total + s.rollout_decode * extra['loss_roll_dec']
  return total, dict(loss=total, loss_dec=dec, loss_dec0=dec0, loss_dyn=dyn, loss_unif=unif, **extra)


def smt_losses(nets: Networks, params, batch, rng, config):
  """(total, metrics) of config.smt.mode; the signature every objective shares."""
  fn = window_losses if config.smt.mode == 'window' else parallel_losses
  return fn(nets, params, batch, rng, config)
