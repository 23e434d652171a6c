"""The RNN's updaters (method.md §3): a cell maps (memory [B, K, D], token x [B]) to the next memory.

Nonlinear cells (the memory is RMS-normalised after every step, as the encoder's is): the paper's Transformer
updater, a GRU and an LSTM over the flattened Z = K*D memory, a residual MLP. Linear cells (Feng et al. 2024,
"Were RNNs All We Needed?"; Orvieto et al. 2023, LRU), whose state evolves as new = a(x) * state + b(x) with
no normalisation, so BPTT can run as a parallel scan over time (smtjax/bptt.py): minGRU and the LRU. Each is
registered by name in smtjax.registry, where users add their own; `make_cell(cfg)` builds the one of
`cfg.cell`. GRU, LSTM, MLP and the linear cells work on the flattened memory and need no projection for a
narrow memory token.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from smtjax import layers
from smtjax.config import ModelConfig
from smtjax.errors import ConfigError
from smtjax.registry import cell_class, register_cell


def make_cell(cfg: ModelConfig) -> nn.Module:
  """The registered cell of cfg.cell, built from cfg."""
  return cell_class(cfg.cell)(cfg)


def _option(cfg: ModelConfig, name: str, default):
  return dict(cfg.cell_options).get(name, default)


@register_cell('transformer')
class TransformerCell(nn.Module):
  """Reference updater (method.md §3): full attention over [memory tokens, embed(x)]; the first K
  outputs, RMS-normalised, are the next memory. No residual around it unless `cfg.cell_residual`."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, mem_BxKxD, x_B):
    c = self.cfg
    B, K, _ = mem_BxKxD.shape
    mem = mem_BxKxD.astype(c.residual_dtype)
    if c.projects_memory:
      mem = layers.memory_projection(c.d_model, c.dtype, 'mem_in')(mem).astype(c.residual_dtype)
    h = jnp.concatenate([mem, layers.token_embedding(c)(jnp.maximum(x_B, 0))[:, None]], axis=1)
    pos = jnp.broadcast_to(jnp.arange(K + 1), (B, K + 1))
    block = layers.make_block(c.remat)
    for i in range(c.cell_depth):  # full attention, no mask: the fused path
      h = block(c, name=f'block_{i}')(h, pos)
    if c.final_norm:
      h = layers.RMSNorm(c.residual_dtype, name='norm_out')(h)
    new = h[:, :K]
    if c.projects_memory:
      new = layers.memory_projection(c.mem_dim, c.dtype, 'mem_out')(layers.rms_norm(new)).astype(c.residual_dtype)
    if c.cell_residual:
      new = new + mem_BxKxD.astype(new.dtype)
    return layers.rms_norm(new)


@register_cell('gru')
class GRUCell(nn.Module):
  """A GRU over the flattened Z-vector memory, fed embed(x); the output is re-split into K tokens."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, mem_BxKxD, x_B):
    B, K, D = mem_BxKxD.shape
    e = layers.token_embedding(self.cfg)(jnp.maximum(x_B, 0))
    h, _ = nn.GRUCell(K * D, dtype=self.cfg.dtype, name='gru')(mem_BxKxD.reshape(B, K * D).astype(self.cfg.dtype), e)
    return layers.rms_norm(h.reshape(B, K, D))


@register_cell('mlp')
class MLPCell(nn.Module):
  """Residual MLP over [flattened memory, embed(x)]: h <- h + MLP(RMSNorm([h, e])), cell_depth times."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, mem_BxKxD, x_B):
    c = self.cfg
    B, K, D = mem_BxKxD.shape
    Z = K * D
    e = layers.token_embedding(c)(jnp.maximum(x_B, 0))
    h = mem_BxKxD.reshape(B, Z).astype(c.residual_dtype)
    init = nn.initializers.normal(0.02)
    for i in range(c.cell_depth):
      u = layers.RMSNorm(c.dtype, name=f'norm_{i}')(jnp.concatenate([h, e], axis=-1))
      u = nn.Dense(c.mlp_ratio * c.d_model, use_bias=False, dtype=c.dtype, kernel_init=init, name=f'up_{i}')(u)
      h = h + nn.Dense(Z, use_bias=False, dtype=c.dtype, kernel_init=init, name=f'down_{i}')(nn.gelu(u))
    return layers.rms_norm(h.reshape(B, K, D))


@register_cell('lstm')
class LSTMCell(nn.Module):
  """LSTM gates over the flattened memory: its first half is the hidden state h, its second the cell state c
  (Z = K*D must be even), fed embed(x). Unlike the textbook LSTM, the memory tokens (c among them) are
  RMS-normalised after every step, as every cell's memory is here, so c cannot accumulate without bound."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, mem_BxKxD, x_B):
    B, K, D = mem_BxKxD.shape
    Z = K * D
    if Z % 2:
      raise ConfigError(f'model.cell=lstm: the memory size K*D = {Z} must be even (half h, half c)')
    e = layers.token_embedding(self.cfg)(jnp.maximum(x_B, 0))
    flat = mem_BxKxD.reshape(B, Z).astype(self.cfg.dtype)
    (c, h), _ = nn.OptimizedLSTMCell(Z // 2, dtype=self.cfg.dtype, name='lstm')((flat[:, Z // 2:], flat[:, :Z // 2]), e)
    return layers.rms_norm(jnp.concatenate([h, c], axis=-1).reshape(B, K, D))


class _LinearCell(nn.Module):
  """new = a(x) * state + b(x), elementwise, in the cell's state space (`to_state` / `from_state`)."""

  def __call__(self, mem_BxKxD, x_B):
    a, b = self.coefficients(x_B)
    return self.from_state(a * self.to_state(mem_BxKxD) + b, mem_BxKxD.shape)


@register_cell('mingru')
class MinGRUCell(_LinearCell):
  """minGRU (Feng et al. 2024): z = sigmoid(W_z e), h~ = W_h e, h <- (1 - z) * h + z * h~ over the flattened
  memory, e = embed(x). Its gates read the input only, so the recurrence is linear in h: one linear recurrent
  layer, with the decoder as its nonlinear readout."""
  cfg: ModelConfig

  def setup(self):
    c = self.cfg
    Z = c.num_mem_tokens * c.mem_dim
    self.embed = layers.token_embedding(c)
    self.gate = nn.Dense(Z, dtype=jnp.float32, name='gate')
    self.candidate = nn.Dense(Z, dtype=jnp.float32, name='candidate')

  def coefficients(self, x_B):
    e = self.embed(jnp.maximum(x_B, 0)).astype(jnp.float32)
    z = jax.nn.sigmoid(self.gate(e))
    return 1.0 - z, z * self.candidate(e)

  def to_state(self, mem_BxKxD):
    return mem_BxKxD.reshape(mem_BxKxD.shape[:-2] + (-1,)).astype(jnp.float32)

  def from_state(self, state, shape):
    return state.reshape(shape)


def _lru_init(cfg: ModelConfig):
  """LRU initialisation (Orvieto et al. 2023): eigenvalues uniform on the ring r_min <= |lambda| <= r_max with
  phases in [0, max_phase], as nu = log(-log|lambda|), theta = log(phase); gamma = sqrt(1 - |lambda|^2)."""
  r_min, r_max = _option(cfg, 'r_min', 0.4), _option(cfg, 'r_max', 0.99)
  max_phase = _option(cfg, 'max_phase', 2 * math.pi)

  def nu(key, shape):
    u = jax.random.uniform(key, shape)
    return jnp.log(-0.5 * jnp.log(u * (r_max ** 2 - r_min ** 2) + r_min ** 2))

  def theta(key, shape):
    return jnp.log(max_phase * jax.random.uniform(key, shape))
  return nu, theta


@register_cell('lru')
class LRUCell(_LinearCell):
  """Linear Recurrent Unit (Orvieto et al. 2023): a diagonal complex recurrence s <- lambda * s + gamma * (B e)
  over N = Z/2 complex numbers (the memory holds their real parts, then their imaginary parts), lambda =
  exp(-exp(nu) + i exp(theta)) stable by construction. The output projection C is the readout's own (the
  decoder reading the memory: one linear recurrent layer with a nonlinear readout). The normalisation gamma =
  sqrt(1 - |lambda|^2) is tied to lambda at every step, where the paper initialises it so and then trains
  log(gamma) freely: the input's scale then follows the eigenvalues as they train (a free gamma would be a new
  parameter, and saved runs' parameter trees would change).
  `model.cell_options`: r_min, r_max (eigenvalue ring, default 0.4, 0.99), max_phase (default 2 pi)."""
  cfg: ModelConfig

  def setup(self):
    c = self.cfg
    Z = c.num_mem_tokens * c.mem_dim
    if Z % 2:
      raise ConfigError(f'model.cell=lru: the memory size K*D = {Z} must be even (real and imaginary parts)')
    N = Z // 2
    nu_init, theta_init = _lru_init(c)
    self.nu_log = self.param('nu_log', nu_init, (N,))
    self.theta_log = self.param('theta_log', theta_init, (N,))
    self.embed = layers.token_embedding(c)
    scale = nn.initializers.normal(1.0 / math.sqrt(2 * c.d_model))
    self.b_re = self.param('b_re', scale, (c.d_model, N))
    self.b_im = self.param('b_im', scale, (c.d_model, N))

  def _lambda(self):
    return jnp.exp(-jnp.exp(self.nu_log) + 1j * jnp.exp(self.theta_log))

  def coefficients(self, x_B):
    lam = self._lambda()
    gamma = jnp.sqrt(1.0 - jnp.abs(lam) ** 2)
    e = self.embed(jnp.maximum(x_B, 0)).astype(jnp.float32)
    b = gamma * (e @ self.b_re + 1j * (e @ self.b_im))
    return jnp.broadcast_to(lam, b.shape), b

  def to_state(self, mem_BxKxD):
    flat = mem_BxKxD.reshape(mem_BxKxD.shape[:-2] + (-1,)).astype(jnp.float32)
    N = flat.shape[-1] // 2
    return flat[..., :N] + 1j * flat[..., N:]

  def from_state(self, state, shape):
    return jnp.concatenate([state.real, state.imag], axis=-1).reshape(shape)
