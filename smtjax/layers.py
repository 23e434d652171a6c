"""Transformer building blocks: RMSNorm, rotary multi-head attention, MLP, Block.

Attention goes through `jax.nn.dot_product_attention` (cuDNN flash attention on NVIDIA GPUs for 16-bit
inputs, XLA's fused path on other accelerators), on CPU through `explicit_attention` (a hand-written
backward pass); only the register groups of parallel SMT (`Block.prefix_groups`),
whose keys differ per group, use explicit scores, optionally in chunks of groups so that memory grows
linearly with the sequence length.

Every module reads its sizes and options from one frozen `ModelConfig` (smtjax.config).

Shapes in names: B batch, L sequence, H heads, Dh head width, D model width, G register groups,
K registers per group, T tokens, C groups per chunk. Masks are boolean, True where a query may attend to
a key.
"""

from __future__ import annotations

import math
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from smtjax.config import ModelConfig
from smtjax.errors import ConfigError
from smtjax.perf import ATTENTION_CORE  # the scope the roofline leaves out: what a fused kernel keeps on chip

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


ATTENTION_IMPLEMENTATIONS = ('xla', 'cudnn', 'explicit')


def forced_attention() -> str | None:
  """SMTJAX_ATTENTION=xla|cudnn|explicit: one implementation on every platform; None when unset."""
  forced = os.environ.get('SMTJAX_ATTENTION', '')
  if forced and forced not in ATTENTION_IMPLEMENTATIONS:
    raise ConfigError(f'SMTJAX_ATTENTION={forced!r}: must be one of {ATTENTION_IMPLEMENTATIONS}')
  return forced or None


def cudnn_supports(dtype, head_dim: int, q_len: int = 2, k_len: int = 2) -> bool:
  """Whether cuDNN's fused (flash) attention takes these inputs, forward and backward: 16-bit, head width a
  multiple of 8 up to 128, even query and key lengths (its training kernels with a mask need them; the check
  happens when the gradient is built, too late to fall back, so it is made here)."""
  half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
  return half and head_dim % 8 == 0 and head_dim <= 128 and q_len % 2 == 0 and k_len % 2 == 0


@jax.custom_vjp
def _softmax_attention(q, k, v, bias):
  """Head-major float32 attention: q [B, H, Lq, Dh] (already scaled), k, v [B, H, Lk, Dh], additive bias
  broadcastable to [B, H, Lq, Lk] -> [B, H, Lq, Dh]."""
  return _softmax_attention_fwd(q, k, v, bias)[0]


def _softmax_attention_fwd(q, k, v, bias):
  s = jnp.einsum('bhqd,bhkd->bhqk', q, k) + bias
  e = jnp.exp(s - jnp.max(s, axis=-1, keepdims=True))
  p = e / jnp.sum(e, axis=-1, keepdims=True)
  o = jnp.einsum('bhqk,bhkd->bhqd', p, v)
  return o, (q, k, v, p, o)


def _softmax_attention_bwd(res, do):
  """The softmax gradient through rowsum(dO * O) (= rowsum(dP * P), an [Lq, Dh] instead of an [Lq, Lk]
  reduction), every product on the probabilities in the layout the forward wrote them."""
  q, k, v, p, o = res
  dv = jnp.einsum('bhqk,bhqd->bhkd', p, do)
  dp = jnp.einsum('bhqd,bhkd->bhqk', do, v)
  ds = p * (dp - jnp.sum(do * o, axis=-1, keepdims=True))
  dq = jnp.einsum('bhqk,bhkd->bhqd', ds, k)
  dk = jnp.einsum('bhqk,bhqd->bhkd', ds, q)
  return dq, dk, dv, None


_softmax_attention.defvjp(_softmax_attention_fwd, _softmax_attention_bwd)


def explicit_attention(q, k, v, mask4=None, is_causal: bool = False):
  """Softmax attention with a hand-written backward pass, the same function as
  `jax.nn.dot_product_attention(q, k, v, mask=mask4, is_causal=is_causal)` (scale 1/sqrt(Dh); masked keys
  get -1e30). Head-major, in float32, it saves the probabilities and computes the softmax gradient from
  rowsum(dO * O): XLA:CPU differentiates the library function with several transposed copies of the
  [Lq, Lk] tensors, which this avoids (docs/benchmarks.md).
  q: [B, Lq, H, Dh]; k, v: [B, Lk, H, Dh]; mask4: None or boolean broadcastable to [B, 1, Lq, Lk]."""
  Lq, Lk = q.shape[1], k.shape[1]
  scale = 1.0 / jnp.sqrt(jnp.float32(q.shape[-1]))
  qh, kh, vh = (jnp.swapaxes(a.astype(jnp.float32), 1, 2) for a in (q, k, v))
  allowed = jnp.ones((1, 1, 1, Lk), bool) if mask4 is None else mask4
  if is_causal:
    allowed = allowed & jnp.tril(jnp.ones((Lq, Lk), bool))
  bias = jnp.where(allowed, jnp.float32(0), jnp.float32(NEG_INF))
  return jnp.swapaxes(_softmax_attention(qh * scale, kh, vh, bias), 1, 2).astype(q.dtype)


def _rows_with_keys(mask, is_causal: bool, Lq: int):
  """[B or 1, Lq]: whether query i may read at least one key under mask [B, Lq or 1, Lk] (and j <= i)."""
  if is_causal and mask.shape[1] == 1:  # key padding + causal: some valid key at or before i
    return jnp.cumsum(mask[:, 0, :Lq], axis=-1) > 0
  if is_causal:
    mask = mask & jnp.tril(jnp.ones((Lq, mask.shape[-1]), bool))
  return jnp.broadcast_to(jnp.any(mask, axis=-1), mask.shape[:1] + (Lq,))


def _xla_attention(q, k, v, mask4, is_causal: bool):
  return jax.nn.dot_product_attention(q, k, v, mask=mask4, is_causal=is_causal, implementation='xla')


def _cudnn_attention(q, k, v, mask4, is_causal: bool):
  """cuDNN's fused attention where it takes these inputs (a full [B, 1, Lq, Lk] mask, as a bias), else XLA's.
  The choice is made while tracing: a shape cuDNN refuses, or no cuDNN to lower for, gives the XLA path."""
  if not cudnn_supports(q.dtype, q.shape[-1], q.shape[1], k.shape[1]):
    return _xla_attention(q, k, v, mask4, is_causal)
  try:
    m = None if mask4 is None else jnp.broadcast_to(mask4, (q.shape[0], 1, q.shape[1], k.shape[1]))
    return jax.nn.dot_product_attention(q, k, v, mask=m, is_causal=is_causal, implementation='cudnn')
  except (ValueError, NotImplementedError, RuntimeError):
    return _xla_attention(q, k, v, mask4, is_causal)


def _cpu_attention(q, k, v, mask4, is_causal: bool):
  with jax.named_scope('smtjax_cpu_attention'):  # marks the CPU path in lowered programs (tests/test_export.py)
    return explicit_attention(q, k, v, mask4, is_causal)


IMPLEMENTATIONS = {'xla': _xla_attention, 'cudnn': _cudnn_attention, 'explicit': _cpu_attention}


def attend(q, k, v, mask=None, is_causal: bool = False, implementation: str | None = None):
  """Multi-head attention. The implementation is chosen inside the program for the platform it is lowered
  for (`lax.platform_dependent`, so one program exported for several platforms carries each one's path):
  cuDNN's fused attention on NVIDIA GPUs (16-bit inputs, `cudnn_supports`), `explicit_attention` on CPU,
  XLA's path elsewhere (TPU). `implementation` or SMTJAX_ATTENTION=xla|cudnn|explicit forces one everywhere.

  q: [B, Lq, H, Dh]; k, v: [B, Lk, H, Dh]; mask: None or boolean broadcastable to [B, Lq, Lk] (e.g.
  [B, 1, Lk] for key padding); `is_causal` also restricts query i to keys j <= i. -> [B, Lq, H, Dh].
  A query that may read no key gets zeros (padding rows), never NaN. Scores and softmax in float32.
  """
  Lq = q.shape[1]
  mask4 = None if mask is None else mask[:, None]  # [B, 1, Lq or 1, Lk]: one mask for every head
  impl = implementation or forced_attention()
  if impl is not None:
    with jax.named_scope(ATTENTION_CORE):
      out = IMPLEMENTATIONS[impl](q, k, v, mask4, is_causal)
  else:
    branch = lambda f: (lambda q, k, v: f(q, k, v, mask4, is_causal))
    with jax.named_scope(ATTENTION_CORE):
      out = jax.lax.platform_dependent(q, k, v, cpu=branch(_cpu_attention), cuda=branch(_cudnn_attention),
                                       default=branch(_xla_attention))
  if mask is None:
    return out
  has_key = _rows_with_keys(mask, is_causal, Lq)
  return jnp.where(has_key[:, :, None, None], out, jnp.zeros((), out.dtype))


def memory_projection(features: int, dtype, name: str | None = None):
  """A projection to or from memory tokens; its inputs are RMS-normalised, so LeCun init keeps outputs near unit
  RMS."""
  return nn.Dense(features, use_bias=False, dtype=dtype, kernel_init=nn.initializers.lecun_normal(), name=name)


def token_embedding(cfg: ModelConfig, name: str = 'embed'):
  """Token embeddings, in the residual stream's dtype."""
  return nn.Embed(cfg.vocab_size, cfg.d_model, embedding_init=nn.initializers.normal(0.02), dtype=cfg.residual_dtype,
                  name=name)


class Projection(nn.Module):
  """A bias-free linear map from the trailing `in_dims` axes to `features` (nn.DenseGeneral's parameter:
  'kernel' of shape in_shape + features, drawn alike), computed as 2-D matrix products: XLA:CPU's gradient
  of nn.DenseGeneral's N-D product writes the [tokens, features] cotangent transposed. With `split`, one
  product per slice of features[0] (q, k, v), returned as a tuple, so the backward pass never gathers the
  three cotangents into one [tokens, 3 * H * Dh] array."""
  features: tuple[int, ...]
  in_dims: int = 1
  dtype: Any = jnp.float32
  split: bool = False  # return the features[0] slices of the output as a tuple

  @nn.compact
  def __call__(self, x):
    in_shape = x.shape[x.ndim - self.in_dims:]
    n_in, n_out = math.prod(in_shape), math.prod(self.features)

    def init(key, shape, dtype=jnp.float32):  # drawn as the 2-D matrix, as nn.DenseGeneral draws it
      return nn.initializers.normal(0.02)(key, (n_in, n_out), dtype).reshape(shape)

    kernel = self.param('kernel', init, in_shape + tuple(self.features))
    x2 = x.reshape(-1, n_in).astype(self.dtype)
    lead = x.shape[:x.ndim - self.in_dims]
    if self.split:  # one product per slice of the first feature axis (no [tokens, features] gradient to gather)
      per = n_out // self.features[0]
      k2 = kernel.reshape(n_in, self.features[0], per).astype(self.dtype)
      return tuple(jnp.dot(x2, k2[:, i]).reshape(lead + tuple(self.features[1:])) for i in range(self.features[0]))
    y = jnp.dot(x2, kernel.reshape(n_in, n_out).astype(self.dtype))
    return y.reshape(lead + tuple(self.features))


class Attention(nn.Module):
  """Multi-head attention projections with rotary positions; the attention pattern is the caller's.
  Heads are `cfg.head_dim` wide; rotary acts on `cfg.rotary_fraction` of each head."""
  cfg: ModelConfig

  def setup(self):
    self.qkv_proj = Projection((3, self.cfg.num_heads, self.cfg.head_dim), dtype=self.cfg.dtype, split=True)
    self.out_proj = Projection((self.cfg.d_model,), in_dims=2, dtype=self.cfg.dtype)

  def qkv(self, x, pos):
    """x: [..., L, D]; pos: [..., L] -> q, k, v: [..., L, H, Dh] (rotary applied to q and k)."""
    q, k, v = self.qkv_proj(x)
    f = self.cfg.rotary_fraction
    return rotary(q, pos, f), rotary(k, pos, f), v

  def out(self, o):
    """o: [..., H, Dh] -> [..., D]."""
    return self.out_proj(o)


class MLP(nn.Module):
  """Two-layer GELU MLP of width mlp_ratio * d_model (biases when cfg.use_bias; erf GELU when cfg.gelu_exact,
  else the tanh approximation)."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x):
    c = self.cfg
    init = nn.initializers.normal(0.02)
    lead = x.shape[:-1]
    # 2-D matrix products: XLA:CPU's gradient of an N-D product writes a slow transposed copy.
    x = x.reshape(-1, x.shape[-1])
    h = nn.Dense(c.d_model * c.mlp_ratio, use_bias=c.use_bias, dtype=c.dtype, kernel_init=init)(x)
    h = nn.gelu(h, approximate=not c.gelu_exact)
    y = nn.Dense(c.d_model, use_bias=c.use_bias, dtype=c.dtype, kernel_init=init)(h)
    return y.reshape(lead + y.shape[-1:])


class Block(nn.Module):
  """Pre-RMSNorm Transformer block. `__call__` is the ordinary block (masked, and causal when `causal`);
  `prefix_groups` runs the same weights on a token stream plus groups of registers that read a prefix of
  it (parallel SMT encoder), attending only to the last `window` tokens when `window > 0`, and computing
  the register groups `prefix_chunk` at a time when `prefix_chunk > 0`."""
  cfg: ModelConfig
  causal: bool = False
  window: int = 0
  prefix_chunk: int = 0

  def setup(self):
    self.norm_attn = RMSNorm(self.cfg.dtype)
    self.norm_mlp = RMSNorm(self.cfg.dtype)
    self.attn = Attention(self.cfg)
    self.mlp = MLP(self.cfg)

  def __call__(self, x, pos, mask=None):
    """x: [B, L, D]; pos: [B, L]; mask: None or broadcastable to [B, L, L] -> [B, L, D]."""
    q, k, v = self.attn.qkv(self.norm_attn(x), pos)
    x = x + self.attn.out(attend(q, k, v, mask, is_causal=self.causal))
    return x + self.mlp(self.norm_mlp(x))

  def prefix_groups(self, tok, tok_pos, tok_valid, reg, reg_pos):
    """One layer over a token stream and G groups of K registers.

    tok: [B, T, D], tok_pos: [B, T] (rotary positions), tok_valid: [B, T] (False for padding);
    reg: [B, G, K, D], reg_pos: [B, G, K]: group g holds its registers' positions, the first of which is
    the number of valid tokens it reads. Token i reads valid tokens j <= i; group g reads valid tokens
    j < g and its own K registers (with a window w: only tokens less than w positions back). Tokens
    never read registers. Cost per head: O(T^2 + G*K*(T + K)), never O((G*K)^2); with `prefix_chunk` C,
    peak memory O(C*K*T) for the scores instead of O(G*K*T).
    """
    qt, kt, vt = self.attn.qkv(self.norm_attn(tok), tok_pos)  # [B, T, H, Dh]
    if self.prefix_chunk <= 0:
      if self.window > 0:
        tok_att = attend(qt, kt, vt, _token_mask(tok_pos, tok_valid, tok_pos, self.window), is_causal=True)
      else:
        tok_att = attend(qt, kt, vt, tok_valid[:, None, :], is_causal=True)
      new_reg = self._registers(reg, reg_pos, jnp.arange(reg.shape[1]), kt, vt, tok_pos, tok_valid)
    else:
      tok_att, new_reg = self._chunked(qt, kt, vt, tok_pos, tok_valid, reg, reg_pos)
    tok = tok + self.attn.out(tok_att)
    return tok + self.mlp(self.norm_mlp(tok)), new_reg

  def _registers(self, reg, reg_pos, group, kt, vt, tok_pos, tok_valid):
    """The whole layer for register groups `group` [G'] (their indices): reg [B, G', K, D] -> same."""
    qr, kr, vr = self.attn.qkv(self.norm_attn(reg), reg_pos)  # [B, G', K, H, Dh]
    reads = _group_reads(group, reg_pos[:, :, 0], tok_pos, tok_valid, self.window)  # [B, G', T]
    scale = jnp.sqrt(jnp.float32(qr.shape[-1]))
    with jax.named_scope(ATTENTION_CORE):
      to_tok = jnp.einsum('bgkhd,bthd->bhgkt', qr, kt, preferred_element_type=jnp.float32) / scale
      to_reg = jnp.einsum('bgkhd,bgjhd->bhgkj', qr, kr, preferred_element_type=jnp.float32) / scale
      # One softmax over [allowed tokens, own registers]: the registers are always there, so no row is empty.
      to_tok = jnp.where(reads[:, None, :, None, :], to_tok, NEG_INF)
      mx = jnp.maximum(jnp.max(to_tok, axis=-1, keepdims=True), jnp.max(to_reg, axis=-1, keepdims=True))
      e_tok, e_reg = jnp.exp(to_tok - mx), jnp.exp(to_reg - mx)
      norm = jnp.sum(e_tok, axis=-1, keepdims=True) + jnp.sum(e_reg, axis=-1, keepdims=True)
      o = (jnp.einsum('bhgkt,bthd->bgkhd', (e_tok / norm).astype(vt.dtype), vt)
           + jnp.einsum('bhgkj,bgjhd->bgkhd', (e_reg / norm).astype(vr.dtype), vr))
    reg = reg + self.attn.out(o)
    return reg + self.mlp(self.norm_mlp(reg))

  def _chunked(self, qt, kt, vt, tok_pos, tok_valid, reg, reg_pos):
    """Token attention and the register groups, C queries / C groups at a time (a rematerialised scan),
    so only one chunk's scores [B, H, C, K, T] exist at once, in the forward and the backward pass."""
    B, T = tok_pos.shape
    G, C = reg.shape[1], self.prefix_chunk
    n = max(-(-T // C), -(-G // C))

    def split(a, length):  # [B, length, ...] -> [n, B, C, ...], zero-padded to n*C
      a = jnp.pad(a, [(0, 0), (0, n * C - length)] + [(0, 0)] * (a.ndim - 2))
      return jnp.moveaxis(a.reshape((B, n, C) + a.shape[2:]), 1, 0)

    def merge(a, length):  # [n, B, C, ...] -> [B, length, ...]
      return jnp.moveaxis(a, 0, 1).reshape((B, n * C) + a.shape[3:])[:, :length]

    def body(blk, carry, xs, shared):
      q_c, qpos_c, reg_c, regpos_c, start = xs
      kt, vt, tok_pos, tok_valid = shared
      mask = _token_mask(qpos_c, tok_valid, tok_pos, blk.window) & (
          (start + jnp.arange(C))[:, None] >= jnp.arange(T)[None, :])[None]
      att = attend(q_c, kt, vt, mask)
      return carry, (att, blk._registers(reg_c, regpos_c, start + jnp.arange(C), kt, vt, tok_pos, tok_valid))

    scan = nn.scan(nn.remat(body, prevent_cse=False), variable_broadcast='params', split_rngs={'params': False},
                   in_axes=(0, nn.broadcast), length=n)
    xs = (split(qt, T), split(tok_pos, T), split(reg, G), split(reg_pos, G), jnp.arange(n) * C)
    _, (att, new_reg) = scan(self, None, xs, (kt, vt, tok_pos, tok_valid))
    return merge(att, T), merge(new_reg, G)


def _token_mask(q_pos, k_valid, k_pos, window: int):
  """[B, Lq, T]: valid keys, and with a window only those less than `window` positions back. (Causality
  is the caller's.)"""
  mask = k_valid[:, None, :]
  if window > 0:
    mask = mask & (q_pos[:, :, None] - k_pos[:, None, :] < window)
  return jnp.broadcast_to(mask, (k_valid.shape[0], q_pos.shape[1], k_valid.shape[1]))


def _group_reads(group, n_before, tok_pos, tok_valid, window: int):
  """[B, G', T]: group g (prefix length g, `n_before` [B, G'] valid tokens) reads valid tokens j < g, and
  with a window only those at positions >= n_before - window."""
  T = tok_pos.shape[1]
  reads = tok_valid[:, None, :] & (jnp.arange(T)[None, :] < group[:, None])[None]
  if window > 0:
    reads = reads & (tok_pos[:, None, :] >= n_before[:, :, None] - window)
  return reads


def make_block(remat: bool):
  """The Block class, rematerialised in the backward pass when `remat` (saves activation memory)."""
  if not remat:
    return Block
  return nn.remat(Block, methods=['__call__', 'prefix_groups'])
