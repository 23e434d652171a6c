"""Transformer building blocks: RMSNorm, rotary multi-head attention with explicit masks, MLP, Block.

Shapes in names: B batch, L sequence, H heads, Dh head width, D model width, G register groups,
K registers per group, T tokens. Masks are boolean, True where a query may attend to a key.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

NEG_INF = -1e30


def rms_norm(x, eps: float = 1e-6):
  """Scale-free RMS normalisation over the last axis (used for memory tokens), computed in float32."""
  x32 = x.astype(jnp.float32)
  return (x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)).astype(x.dtype)


class RMSNorm(nn.Module):
  """RMS normalisation with a learned scale (pre-norm of every block)."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    scale = self.param('scale', nn.initializers.ones, (x.shape[-1],))
    return (rms_norm(x.astype(jnp.float32)) * scale).astype(self.dtype)


def rotary(x, pos, fraction: float = 1.0):
  """Rotary position embedding on the first `fraction` of each head's features (the rest pass through
  unchanged, as in GPT-J / x-transformers). x: [..., L, H, Dh]; pos: [..., L] (integer positions)."""
  dh = x.shape[-1]
  rot = int(round(dh * fraction))
  if rot < dh:
    return jnp.concatenate([rotary(x[..., :rot], pos), x[..., rot:]], axis=-1)
  freq = 1.0 / (10000.0 ** (jnp.arange(0, dh // 2, dtype=jnp.float32) / (dh // 2)))
  ang = pos.astype(jnp.float32)[..., None, None] * freq  # [..., L, 1, Dh/2]
  sin, cos = jnp.sin(ang), jnp.cos(ang)
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1).astype(x.dtype)


def masked_softmax(logits, mask):
  """Softmax over the last axis in float32; masked-out entries get zero weight."""
  logits = jnp.where(mask, logits.astype(jnp.float32), NEG_INF)
  return jax.nn.softmax(logits, axis=-1)


def attend(q, k, v, mask):
  """q: [B, Lq, H, Dh]; k, v: [B, Lk, H, Dh]; mask: [B, Lq, Lk] -> [B, Lq, H, Dh]."""
  logits = jnp.einsum('bqhd,bkhd->bhqk', q, k) / jnp.sqrt(q.shape[-1]).astype(q.dtype)
  w = masked_softmax(logits, mask[:, None]).astype(v.dtype)
  return jnp.einsum('bhqk,bkhd->bqhd', w, v)


class Attention(nn.Module):
  """Multi-head attention projections with rotary positions; the attention pattern is the caller's.
  Heads are `head_dim` wide (0: d_model // num_heads); rotary acts on `rotary_fraction` of each head."""
  d_model: int
  num_heads: int
  dtype: Any = jnp.float32
  head_dim: int = 0
  rotary_fraction: float = 1.0

  def setup(self):
    dh = self.head_dim or self.d_model // self.num_heads
    init = nn.initializers.normal(0.02)
    self.qkv_proj = nn.DenseGeneral((3, self.num_heads, dh), use_bias=False, dtype=self.dtype, kernel_init=init)
    self.out_proj = nn.DenseGeneral(self.d_model, axis=(-2, -1), use_bias=False, dtype=self.dtype, kernel_init=init)

  def qkv(self, x, pos):
    """x: [..., L, D]; pos: [..., L] -> q, k, v: [..., L, H, Dh] (rotary applied to q and k)."""
    qkv = self.qkv_proj(x)
    q, k, v = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]
    return rotary(q, pos, self.rotary_fraction), rotary(k, pos, self.rotary_fraction), v

  def out(self, o):
    return self.out_proj(o)


class MLP(nn.Module):
  d_model: int
  mlp_ratio: int = 4
  dtype: Any = jnp.float32
  use_bias: bool = False

  @nn.compact
  def __call__(self, x):
    init = nn.initializers.normal(0.02)
    h = nn.Dense(self.d_model * self.mlp_ratio, use_bias=self.use_bias, dtype=self.dtype, kernel_init=init)(x)
    return nn.Dense(self.d_model, use_bias=self.use_bias, dtype=self.dtype, kernel_init=init)(nn.gelu(h))


class Block(nn.Module):
  """Pre-RMSNorm Transformer block. `__call__` is the ordinary masked block; `prefix_groups` runs the same
  weights on a token stream plus groups of registers that read a prefix of it (parallel SMT encoder)."""
  d_model: int
  num_heads: int
  mlp_ratio: int = 4
  dtype: Any = jnp.float32
  head_dim: int = 0  # 0: d_model // num_heads
  rotary_fraction: float = 1.0
  use_bias: bool = False  # MLP biases (attention projections never have any)

  def setup(self):
    self.norm_attn = RMSNorm(self.dtype)
    self.norm_mlp = RMSNorm(self.dtype)
    self.attn = Attention(self.d_model, self.num_heads, self.dtype, self.head_dim, self.rotary_fraction)
    self.mlp = MLP(self.d_model, self.mlp_ratio, self.dtype, self.use_bias)

  def __call__(self, x, pos, mask):
    """x: [B, L, D]; pos: [B, L]; mask: [B, L, L] -> [B, L, D]."""
    q, k, v = self.attn.qkv(self.norm_attn(x), pos)
    x = x + self.attn.out(attend(q, k, v, mask))
    return x + self.mlp(self.norm_mlp(x))

  def prefix_groups(self, tok, tok_pos, tok_mask, reg, reg_pos, reg_tok_mask):
    """One layer over a token stream and G groups of K registers.

    tok: [B, T, D], tok_pos: [B, T], tok_mask: [B, T, T] (token-to-token, causal);
    reg: [B, G, K, D], reg_pos: [B, G, K], reg_tok_mask: [B, G, T] (which tokens group g reads).
    Tokens never read registers; a register reads its group's allowed tokens and its own K siblings.
    Cost per head: O(T^2 + G*K*(T + K)), never O((G*K)^2).
    """
    qt, kt, vt = self.attn.qkv(self.norm_attn(tok), tok_pos)  # [B, T, H, Dh]
    qr, kr, vr = self.attn.qkv(self.norm_attn(reg), reg_pos)  # [B, G, K, H, Dh]
    tok = tok + self.attn.out(attend(qt, kt, vt, tok_mask))

    scale = jnp.sqrt(qr.shape[-1]).astype(qr.dtype)
    to_tok = jnp.einsum('bgkhd,bthd->bhgkt', qr, kt) / scale  # [B, H, G, K, T]
    to_reg = jnp.einsum('bgkhd,bgjhd->bhgkj', qr, kr) / scale  # [B, H, G, K, K]
    K = reg.shape[2]
    mask = jnp.concatenate([
        jnp.broadcast_to(reg_tok_mask[:, None, :, None, :], to_tok.shape),
        jnp.ones(to_reg.shape, bool)], axis=-1)
    w = masked_softmax(jnp.concatenate([to_tok, to_reg], axis=-1), mask).astype(vt.dtype)
    o = (jnp.einsum('bhgkt,bthd->bgkhd', w[..., :-K], vt)
         + jnp.einsum('bhgkj,bgjhd->bgkhd', w[..., -K:], vr))
    reg = reg + self.attn.out(o)
    return tok + self.mlp(self.norm_mlp(tok)), reg + self.mlp(self.norm_mlp(reg))


def make_block(remat: bool):
  """The Block class, rematerialised in the backward pass when `remat` (saves activation memory)."""
  if not remat:
    return Block
  return nn.remat(Block, methods=['__call__', 'prefix_groups'])
