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

import functools
import math
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

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


def rotary(x, pos, num_positions: int, fraction: float = 1.0):
  """Rotary position embedding on the first `fraction` of each head's features (the rest pass through
  unchanged, as in GPT-J / x-transformers). x: [..., L, H, Dh]; pos: [..., L] (integer positions, each below the
  static `num_positions`). Sine and cosine come from a table made when the program is traced, a constant of the
  program: computed from `pos` inside it, XLA:CPU fuses them into every product that reads them and recomputes
  them per head and feature, forward and backward. A position outside the table gives NaN, never a wrong angle."""
  dh = x.shape[-1]
  rot = int(round(dh * fraction))
  half = rot // 2
  sin, cos = (jnp.take(t, pos, axis=0, mode='fill', fill_value=jnp.nan) for t in _rotary_table(num_positions, half))
  sin, cos = sin[..., None, :], cos[..., None, :]  # one angle for every head
  x32 = x.astype(jnp.float32)
  x1, x2 = x32[..., :half], x32[..., half:rot]
  parts = [x1 * cos - x2 * sin, x1 * sin + x2 * cos] + ([x32[..., rot:]] if rot < dh else [])
  return jnp.concatenate(parts, axis=-1).astype(x.dtype)


def _rotary_frequencies(half: int) -> np.ndarray:
  return (1.0 / (10000.0 ** (np.arange(half, dtype=np.float32) / np.float32(half)))).astype(np.float32)


@functools.lru_cache(maxsize=64)
def _rotary_table(num_positions: int, half: int) -> tuple[np.ndarray, np.ndarray]:
  """(sin, cos) [num_positions, half] in float32 of the float32 angles position * frequency."""
  ang = (np.arange(num_positions, dtype=np.float32)[:, None] * _rotary_frequencies(half)).astype(np.float64)
  return np.sin(ang).astype(np.float32), np.cos(ang).astype(np.float32)


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


def register_attention(q, kt, vt, kr, vr, reads):
  """Register groups reading a prefix of the token stream and their own registers, in one softmax per
  query (the registers are always there, so no row is empty): q, kr, vr [B, G, K, H, Dh]; kt, vt [B, T, H, Dh];
  reads [B, G, T] (which tokens each group may read) -> [B, G, K, H, Dh]. Head-major in float32 with a
  hand-written backward pass, as `explicit_attention`: its autodiff form costs several times more on CPU."""
  B, G, K, H, Dh = q.shape
  scale = 1.0 / jnp.sqrt(jnp.float32(Dh))
  head_major = lambda a: jnp.moveaxis(a.astype(jnp.float32), -2, 1)  # [B, ..., H, Dh] -> [B, H, ..., Dh]
  qh = head_major(q).reshape(B, H, G * K, Dh) * scale
  bias = jnp.where(jnp.repeat(reads, K, axis=1), jnp.float32(0), jnp.float32(NEG_INF))[:, None]  # [B, 1, G*K, T]
  o = _register_softmax(qh, head_major(kt), head_major(vt), head_major(kr), head_major(vr), bias)
  return jnp.moveaxis(o.reshape(B, H, G, K, Dh), 1, -2).astype(q.dtype)


@jax.custom_vjp
def _register_softmax(q, kt, vt, kr, vr, bias):
  """q [B, H, G*K, Dh] (scaled), kt, vt [B, H, T, Dh], kr, vr [B, H, G, K, Dh], bias [B, 1, G*K, T]."""
  return _register_softmax_fwd(q, kt, vt, kr, vr, bias)[0]


def _register_softmax_fwd(q, kt, vt, kr, vr, bias):
  B, H, G, K, Dh = kr.shape
  st = jnp.einsum('bhqd,bhtd->bhqt', q, kt) + bias
  sr = jnp.einsum('bhgkd,bhgjd->bhgkj', q.reshape(B, H, G, K, Dh), kr).reshape(B, H, G * K, K)
  mx = jnp.maximum(jnp.max(st, axis=-1, keepdims=True), jnp.max(sr, axis=-1, keepdims=True))
  et, er = jnp.exp(st - mx), jnp.exp(sr - mx)
  norm = jnp.sum(et, axis=-1, keepdims=True) + jnp.sum(er, axis=-1, keepdims=True)
  pt, pr = et / norm, er / norm
  o = (jnp.einsum('bhqt,bhtd->bhqd', pt, vt)
       + jnp.einsum('bhgkj,bhgjd->bhgkd', pr.reshape(B, H, G, K, K), vr).reshape(B, H, G * K, Dh))
  return o, (q, kt, vt, kr, vr, pt, pr, o)


def _register_softmax_bwd(res, do):
  q, kt, vt, kr, vr, pt, pr, o = res
  B, H, G, K, Dh = kr.shape
  grouped = lambda a: a.reshape(B, H, G, K, a.shape[-1])
  delta = jnp.sum(do * o, axis=-1, keepdims=True)
  dst = pt * (jnp.einsum('bhqd,bhtd->bhqt', do, vt) - delta)
  dsr = grouped(pr) * (jnp.einsum('bhgkd,bhgjd->bhgkj', grouped(do), vr) - grouped(delta))
  dq = jnp.einsum('bhqt,bhtd->bhqd', dst, kt) + jnp.einsum('bhgkj,bhgjd->bhgkd', dsr, kr).reshape(q.shape)
  dkt = jnp.einsum('bhqt,bhqd->bhtd', dst, q)
  dvt = jnp.einsum('bhqt,bhqd->bhtd', pt, do)
  dkr = jnp.einsum('bhgkj,bhgkd->bhgjd', dsr, grouped(q))
  dvr = jnp.einsum('bhgkj,bhgkd->bhgjd', grouped(pr), grouped(do))
  return dq, dkt, dvt, dkr, dvr, None


_register_softmax.defvjp(_register_softmax_fwd, _register_softmax_bwd)


def band_attention(q, k, v, valid, window: int):
  """Causal attention reading the last `window` positions: query i reads valid keys j with i - window < j <= i.
  q, k, v: [B, T, H, Dh]; valid: [B, T] -> [B, T, H, Dh]. In blocks of `window` queries, each reading its own
  block and the one before (2 * window keys, masked to the band), through `attend`: O(T * window) per head
  instead of O(T^2)."""
  B, T = valid.shape
  w = window
  n = -(-T // w)
  blocks = lambda a: jnp.pad(a, [(0, 0), (0, n * w - T)] + [(0, 0)] * (a.ndim - 2)).reshape((B, n, w) + a.shape[2:])
  # [previous block, this block] along the keys: key m of block i is position i*w - w + m.
  with_previous = lambda a: jnp.concatenate([jnp.pad(a, [(0, 0), (1, 0)] + [(0, 0)] * (a.ndim - 2))[:, :-1], a], axis=2)
  kk, vv, ok = (with_previous(blocks(a)) for a in (k, v, valid))
  r, m = jnp.arange(w)[:, None], jnp.arange(2 * w)[None, :]
  mask = ((m > r) & (m <= r + w))[None, None] & ok[:, :, None, :]  # [B, n, w, 2w]
  rows = lambda a: a.reshape((B * n,) + a.shape[2:])
  out = attend(rows(blocks(q)), rows(kk), rows(vv), rows(mask))
  return out.reshape((B, n * w) + q.shape[2:])[:, :T]


def _rows_with_keys(mask, is_causal: bool, Lq: int):
  """[B or 1, Lq]: whether query i may read at least one key under mask [B, Lq or 1, Lk] (and j <= i)."""
  if is_causal and mask.shape[1] == 1:  # key padding + causal: some valid key at or before i
    return jnp.cumsum(mask[:, 0, :Lq], axis=-1) > 0
  if is_causal:
    mask = mask & jnp.tril(jnp.ones((Lq, mask.shape[-1]), bool))
  return jnp.broadcast_to(jnp.any(mask, axis=-1), mask.shape[:1] + (Lq,))


def _xla_attention(q, k, v, mask4, is_causal: bool):
  with jax.named_scope('smtjax_xla_attention'):  # marks XLA's path in lowered programs (tests/test_export.py)
    return jax.nn.dot_product_attention(q, k, v, mask=mask4, is_causal=is_causal, implementation='xla')


def _cudnn_attention(q, k, v, mask4, is_causal: bool):
  """cuDNN's fused attention where it takes these inputs (a full [B, 1, Lq, Lk] mask, as a bias), else XLA's.
  An odd length (K+1 cell tokens, K+Tf-1 decoder tokens at the published K=16) is padded by one: a masked key,
  and a query row that is dropped, so the result is exact. The choice is made while tracing: a dtype or head
  width cuDNN refuses, or no cuDNN to lower for, gives the XLA path, logged once per reason."""
  Lq, Lk = q.shape[1], k.shape[1]
  if Lq % 2 or Lk % 2:
    pad = lambda a, n: jnp.pad(a, [(0, 0), (0, n)] + [(0, 0)] * (a.ndim - 2))
    m = jnp.ones((1, 1, 1, Lk), bool) if mask4 is None else mask4
    m = jnp.pad(m, [(0, 0), (0, 0), (0, (Lq % 2) * (m.shape[2] > 1)), (0, Lk % 2)], constant_values=True)
    m = m.at[..., Lk:].set(False)  # the padded key is never read; a padded query reads the real keys
    out = _cudnn_attention(pad(q, Lq % 2), pad(k, Lk % 2), pad(v, Lk % 2), m, is_causal)
    return out[:, :Lq]
  if not cudnn_supports(q.dtype, q.shape[-1], Lq, Lk):
    _fallback(f'{jnp.dtype(q.dtype).name} inputs with heads of width {q.shape[-1]} (cuDNN: 16-bit, a multiple '
              'of 8 up to 128)')
    return _xla_attention(q, k, v, mask4, is_causal)
  try:
    m = None if mask4 is None else jnp.broadcast_to(mask4, (q.shape[0], 1, Lq, Lk))
    return jax.nn.dot_product_attention(q, k, v, mask=m, is_causal=is_causal, implementation='cudnn')
  except (ValueError, NotImplementedError, RuntimeError) as e:
    _fallback(f'cuDNN refused it ({type(e).__name__}: {e})')
    return _xla_attention(q, k, v, mask4, is_causal)


_FALLBACKS_LOGGED: set[str] = set()


def _fallback(reason: str):
  """Logs, once per reason, that an attention call on CUDA takes XLA's path instead of cuDNN's: a warning on a
  GPU machine; elsewhere (the CUDA branch is traced on every platform, and programs are exported for CUDA from
  CPU machines) at the debug level."""
  if reason not in _FALLBACKS_LOGGED:
    _FALLBACKS_LOGGED.add(reason)
    log = logging.warning if jax.default_backend() in ('gpu', 'cuda') else logging.debug
    log('attention on CUDA falls back to XLA\'s implementation: %s', reason)


def _cpu_attention(q, k, v, mask4, is_causal: bool):
  with jax.named_scope('smtjax_cpu_attention'):  # marks the CPU path in lowered programs (tests/test_export.py)
    return explicit_attention(q, k, v, mask4, is_causal)


IMPLEMENTATIONS = {'xla': _xla_attention, 'cudnn': _cudnn_attention, 'explicit': _cpu_attention}


def attend(q, k, v, mask=None, is_causal: bool = False, implementation: str | None = None):
  """Multi-head attention. The implementation is chosen inside the program for the platform it is lowered
  for (`lax.platform_dependent`; one program exported for several platforms carries each one's path, except
  that cuDNN's attention lowers for CUDA alone: `perf.export_step`):
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

  def qkv(self, x, pos, num_positions: int):
    """x: [..., L, D]; pos: [..., L], each below num_positions -> q, k, v: [..., L, H, Dh] (rotary applied to q
    and k)."""
    q, k, v = self.qkv_proj(x)
    f = self.cfg.rotary_fraction
    return rotary(q, pos, num_positions, f), rotary(k, pos, num_positions, f), v

  def out(self, o):
    """o: [..., H, Dh] -> [..., D]."""
    return self.out_proj(o)


def gelu_erf(x):
  """GELU with erf, as torch.nn.GELU() computes it: x/2 (1 + erf(x / sqrt 2)). jax.nn.gelu's exact form goes
  through erfc, which XLA:CPU evaluates per element as two branches, each with its own exponential."""
  return 0.5 * x * (1.0 + jax.lax.erf(x * np.asarray(math.sqrt(0.5), x.dtype)))


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
    h = gelu_erf(h) if c.gelu_exact else nn.gelu(h, approximate=True)
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
    q, k, v = self.attn.qkv(self.norm_attn(x), pos, x.shape[1])  # every caller's positions are below L
    x = x + self.attn.out(attend(q, k, v, mask, is_causal=self.causal))
    return x + self.mlp(self.norm_mlp(x))

  def prefix_groups(self, tok, tok_pos, tok_valid, reg, reg_pos, group):
    """One layer over a token stream and G groups of K registers.

    tok: [B, T, D], tok_pos: [B, T] (rotary positions), tok_valid: [B, T] (False for padding);
    reg: [B, G, K, D], reg_pos: [B, G, K]: group g holds its registers' positions, the first of which is
    the number of valid tokens it reads; group: [B, G] the prefix length of each group (any G of the
    T+1 prefixes, in any order, repeats allowed). Token i reads valid tokens j <= i; group g reads valid
    tokens j < group[b, g] and its own K registers (with a window w: only tokens less than w positions
    back). Tokens never read registers, and groups never read each other, so any subset of the groups
    computes exactly what the full set would. Cost per head: O(T^2 + G*K*(T + K)), never O((G*K)^2); with
    `prefix_chunk` C, peak memory O(C*K*T) for the scores instead of O(G*K*T); with a window w < T/2,
    O(T*w + G*K*(w + K)) (`_banded`).
    """
    qt, kt, vt = self.attn.qkv(self.norm_attn(tok), tok_pos, tok.shape[1])  # [B, T, H, Dh]
    if 0 < self.window and 2 * self.window < tok.shape[1]:
      tok_att, new_reg = self._banded(qt, kt, vt, tok_valid, reg, reg_pos)
    elif self.prefix_chunk <= 0:
      if self.window > 0:
        tok_att = attend(qt, kt, vt, _token_mask(tok_pos, tok_valid, tok_pos, self.window), is_causal=True)
      else:
        tok_att = attend(qt, kt, vt, tok_valid[:, None, :], is_causal=True)
      new_reg = self._registers(reg, reg_pos, group, kt, vt, tok_pos, tok_valid)
    else:
      tok_att, new_reg = self._chunked(qt, kt, vt, tok_pos, tok_valid, reg, reg_pos, group)
    tok = tok + self.attn.out(tok_att)
    return tok + self.mlp(self.norm_mlp(tok)), new_reg

  def _registers(self, reg, reg_pos, group, kt, vt, tok_pos, tok_valid):
    """The whole layer for register groups of prefix lengths `group` [B, G']: reg [B, G', K, D] -> same."""
    qr, kr, vr = self.attn.qkv(self.norm_attn(reg), reg_pos, kt.shape[1] + reg.shape[2])  # [B, G', K, H, Dh]
    reads = _group_reads(group, reg_pos[:, :, 0], tok_pos, tok_valid, self.window)  # [B, G', T]
    with jax.named_scope(ATTENTION_CORE):
      o = register_attention(qr, kt, vt, kr, vr, reads)
    reg = reg + self.attn.out(o)
    return reg + self.mlp(self.norm_mlp(reg))

  def _banded(self, qt, kt, vt, tok_valid, reg, reg_pos):
    """Token attention and the register groups when only the last w = `window` positions are read, at a cost
    linear in T: the valid tokens are put first (padding last, order kept), so that a token's position is
    its index and each window a contiguous band; tokens attend in blocks (`band_attention`) and each group
    reads the w tokens before its prefix's end, gathered. The groups go `prefix_chunk` at a time (a
    rematerialised scan) when that is set."""
    B, T = tok_valid.shape
    w = self.window
    order = jnp.argsort(~tok_valid, axis=1, stable=True)  # [B, T]: valid tokens first
    first = lambda a: jnp.take_along_axis(a, order[:, :, None, None], axis=1)
    kc, vc = first(kt), first(vt)
    valid = jnp.arange(T) < jnp.sum(tok_valid, axis=1, keepdims=True)
    att = band_attention(first(qt), kc, vc, valid, w)
    tok_att = jnp.take_along_axis(att, jnp.argsort(order, axis=1)[:, :, None, None], axis=1)  # back in place

    def groups(blk, reg_c, regpos_c):  # [B, C, K, D]: each group reads tokens n-w .. n-1 (n = its valid tokens)
      C, K = reg_c.shape[1:3]
      idx = regpos_c[:, :, :1] - w + jnp.arange(w)  # [B, C, w]
      reads = (idx >= 0).reshape(B * C, 1, w)
      pick = jax.vmap(lambda a, i: a[i])  # a [T, H, Dh], i [C, w] -> [C, w, H, Dh]
      idx = jnp.maximum(idx, 0)
      flat = lambda a: a.reshape((B * C, 1) + a.shape[2:])
      qr, kr, vr = blk.attn.qkv(blk.norm_attn(reg_c), regpos_c, kc.shape[1] + K)
      with jax.named_scope(ATTENTION_CORE):
        o = register_attention(flat(qr), pick(kc, idx).reshape((B * C, w) + kc.shape[2:]),
                               pick(vc, idx).reshape((B * C, w) + vc.shape[2:]), flat(kr), flat(vr), reads)
      r = reg_c + blk.attn.out(o.reshape(qr.shape))
      return r + blk.mlp(blk.norm_mlp(r))

    if self.prefix_chunk <= 0:
      return tok_att, groups(self, reg, reg_pos)
    G, C = reg.shape[1], self.prefix_chunk
    n = -(-G // C)
    split = lambda a: jnp.moveaxis(jnp.pad(a, [(0, 0), (0, n * C - G)] + [(0, 0)] * (a.ndim - 2)).reshape(
        (B, n, C) + a.shape[2:]), 1, 0)
    body = lambda blk, carry, xs: (carry, groups(blk, *xs))
    scan = nn.scan(nn.remat(body, prevent_cse=False), variable_broadcast='params', split_rngs={'params': False},
                   length=n)
    _, new_reg = scan(self, None, (split(reg), split(reg_pos)))
    return tok_att, jnp.moveaxis(new_reg, 0, 1).reshape((B, n * C) + reg.shape[2:])[:, :G]

  def _chunked(self, qt, kt, vt, tok_pos, tok_valid, reg, reg_pos, group):
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
      q_c, qpos_c, reg_c, regpos_c, group_c, start = xs
      kt, vt, tok_pos, tok_valid = shared
      mask = _token_mask(qpos_c, tok_valid, tok_pos, blk.window) & (
          (start + jnp.arange(C))[:, None] >= jnp.arange(T)[None, :])[None]
      att = attend(q_c, kt, vt, mask)
      return carry, (att, blk._registers(reg_c, regpos_c, group_c, kt, vt, tok_pos, tok_valid))

    scan = nn.scan(nn.remat(body, prevent_cse=False), variable_broadcast='params', split_rngs={'params': False},
                   in_axes=(0, nn.broadcast), length=n)
    xs = (split(qt, T), split(tok_pos, T), split(reg, G), split(reg_pos, G), split(group, G), jnp.arange(n) * C)
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
  """[B, G', T]: a group of prefix length `group` [B, G'] (`n_before` [B, G'] valid tokens) reads valid tokens
  j < group, and with a window only those at positions >= n_before - window."""
  T = tok_pos.shape[1]
  reads = tok_valid[:, None, :] & (jnp.arange(T)[None, None, :] < group[:, :, None])
  if window > 0:
    reads = reads & (tok_pos[:, None, :] >= n_before[:, :, None] - window)
  return reads


def make_block(remat: bool):
  """The Block class, rematerialised in the backward pass when `remat` (saves activation memory)."""
  if not remat:
    return Block
  return nn.remat(Block, methods=['__call__', 'prefix_groups'])
