"""The fused attention path and chunked prefix groups against a plain explicit-mask reference
implementation, including padding, windows and gradients."""

import logging
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from smtjax import config as config_lib
from smtjax import layers, models
from tests.conftest import tiny_config

NEG_INF = -1e30
CFG = config_lib.ModelConfig.from_config(tiny_config())  # d_model 16, 2 heads
D, H = CFG.d_model, CFG.num_heads


# ------------------------------------------------------------------ the explicit-mask reference

def ref_attend(q, k, v, mask):
  """q: [B, Lq, H, Dh]; mask: [B, Lq, Lk] (the plain reference)."""
  logits = jnp.einsum('bqhd,bkhd->bhqk', q, k) / jnp.sqrt(q.shape[-1]).astype(q.dtype)
  w = jax.nn.softmax(jnp.where(mask[:, None], logits.astype(jnp.float32), NEG_INF), axis=-1).astype(v.dtype)
  return jnp.einsum('bhqk,bkhd->bqhd', w, v)


class RefBlock(nn.Module):
  """A plain explicit-mask Block (same parameter tree as layers.Block)."""
  cfg: Any

  def setup(self):
    self.norm_attn = layers.RMSNorm(self.cfg.dtype)
    self.norm_mlp = layers.RMSNorm(self.cfg.dtype)
    self.attn = layers.Attention(self.cfg)
    self.mlp = layers.MLP(self.cfg)

  def __call__(self, x, pos, mask):
    q, k, v = self.attn.qkv(self.norm_attn(x), pos, x.shape[1])
    x = x + self.attn.out(ref_attend(q, k, v, mask))
    return x + self.mlp(self.norm_mlp(x))

  def prefix_groups(self, tok, tok_pos, tok_mask, reg, reg_pos, reg_tok_mask):
    qt, kt, vt = self.attn.qkv(self.norm_attn(tok), tok_pos, tok.shape[1])
    qr, kr, vr = self.attn.qkv(self.norm_attn(reg), reg_pos, tok.shape[1] + reg.shape[2])
    tok = tok + self.attn.out(ref_attend(qt, kt, vt, tok_mask))
    scale = jnp.sqrt(qr.shape[-1]).astype(qr.dtype)
    to_tok = jnp.einsum('bgkhd,bthd->bhgkt', qr, kt) / scale
    to_reg = jnp.einsum('bgkhd,bgjhd->bhgkj', qr, kr) / scale
    K = reg.shape[2]
    mask = jnp.concatenate([jnp.broadcast_to(reg_tok_mask[:, None, :, None, :], to_tok.shape),
                            jnp.ones(to_reg.shape, bool)], axis=-1)
    logits = jnp.where(mask, jnp.concatenate([to_tok, to_reg], axis=-1).astype(jnp.float32), NEG_INF)
    w = jax.nn.softmax(logits, axis=-1).astype(vt.dtype)
    o = (jnp.einsum('bhgkt,bthd->bgkhd', w[..., :-K], vt) + jnp.einsum('bhgkj,bgjhd->bgkhd', w[..., -K:], vr))
    reg = reg + self.attn.out(o)
    return tok + self.mlp(self.norm_mlp(tok)), reg + self.mlp(self.norm_mlp(reg))


def ref_prefix_inputs(x, K, window):
  """The explicit masks of the prefix groups: positions, [B,T,T] token mask, [B,G,T] reads."""
  B, T = x.shape
  valid, pos, count = models._valid_positions(x)
  n_before = jnp.concatenate([jnp.zeros((B, 1), count.dtype), count], axis=1)
  reg_pos = n_before[:, :, None] + jnp.arange(K)
  reads = valid[:, None, :] & (jnp.arange(T)[None, :] < jnp.arange(T + 1)[:, None])[None]
  tok_mask = valid[:, None, :] & jnp.tril(jnp.ones((T, T), bool))
  if window > 0:
    reads = reads & (pos[:, None, :] >= n_before[:, :, None] - window)
    tok_mask = tok_mask & (pos[:, :, None] - pos[:, None, :] < window)
  return valid, pos, reg_pos, tok_mask, reads


def _tokens(B, T, seed=0, pad_left=(0,), pad_mid=False):
  x = np.array(jax.random.randint(jax.random.PRNGKey(seed), (B, T), 0, 9))
  for b, n in enumerate(pad_left):
    x[b, :n] = -1
  if pad_mid:
    x[-1, T // 2] = -1
  return jnp.asarray(x)


# --------------------------------------------------------------------------------------------- tests

@pytest.mark.parametrize('impl', ['xla', 'explicit'])
@pytest.mark.parametrize('causal', [False, True])
def test_attend_equals_explicit_mask_reference(causal, impl):
  B, L = 3, 9
  q, k, v = (jax.random.normal(jax.random.PRNGKey(i), (B, L, H, 8)) for i in range(3))
  keys = jnp.asarray(np.random.RandomState(0).rand(B, L) > 0.3).at[:, -1].set(True).at[1, :2].set(False)
  full = jnp.broadcast_to(keys[:, None, :] & (jnp.tril(jnp.ones((L, L), bool)) if causal else True), (B, L, L))
  out = jax.jit(lambda q, k, v: layers.attend(q, k, v, keys[:, None, :], is_causal=causal, implementation=impl))(
      q, k, v)
  ref = ref_attend(q, k, v, full)
  rows = np.asarray(jnp.any(full, -1))
  assert causal == (not rows.all())  # a causal pattern with key padding leaves some rows empty
  np.testing.assert_allclose(np.asarray(out)[rows], np.asarray(ref)[rows], atol=1e-5, rtol=1e-5)
  # The explicit-mask call (a window pattern) agrees too.
  win = full & (jnp.arange(L)[:, None] - jnp.arange(L)[None, :] < 3)
  out_w = layers.attend(q, k, v, win, implementation=impl)
  rows_w = np.asarray(jnp.any(win, -1))
  np.testing.assert_allclose(np.asarray(out_w)[rows_w], np.asarray(ref_attend(q, k, v, win))[rows_w], atol=1e-5)


@pytest.mark.parametrize('mask_kind', ['none', 'keys', 'keys_causal', 'full'])
def test_explicit_attention_gradients_equal_autodiff(mask_kind):
  """The hand-written backward of the CPU path == autodiff of the reference, for every mask form attend
  takes (no mask, key padding, key padding + causal, a full [B, Lq, Lk] pattern), with an empty row."""
  B, Lq, Lk = 2, 5, 7
  q = jax.random.normal(jax.random.PRNGKey(0), (B, Lq, H, 8))
  k, v = (jax.random.normal(jax.random.PRNGKey(i), (B, Lk, H, 8)) for i in (1, 2))
  ct = jax.random.normal(jax.random.PRNGKey(3), (B, Lq, H, 8))
  keys = jnp.ones((B, Lk), bool).at[0, :3].set(False).at[1, -2:].set(False)
  causal = mask_kind == 'keys_causal'
  full = {'none': jnp.ones((B, Lq, Lk), bool), 'keys': jnp.broadcast_to(keys[:, None], (B, Lq, Lk)),
          'keys_causal': keys[:, None] & jnp.tril(jnp.ones((Lq, Lk), bool)),
          'full': jnp.asarray(np.random.RandomState(1).rand(B, Lq, Lk) > 0.4).at[:, :, 4].set(True)}[mask_kind]
  mask = {'none': None, 'keys': keys[:, None], 'keys_causal': keys[:, None], 'full': full}[mask_kind]
  rows = jnp.any(full, -1)[:, :, None, None]  # rows with no key to read are zeros in attend, not compared

  def loss(fn):
    return lambda q, k, v: jnp.sum(jnp.where(rows, fn(q, k, v), 0.0) * ct)

  got = jax.jit(jax.grad(loss(lambda q, k, v: layers.attend(q, k, v, mask, is_causal=causal,
                                                            implementation='explicit')), argnums=(0, 1, 2)))(q, k, v)
  want = jax.grad(loss(lambda q, k, v: ref_attend(q, k, v, full)), argnums=(0, 1, 2))(q, k, v)
  for name, g, w in zip('qkv', got, want):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=2e-5, rtol=1e-4, err_msg=name)
  assert float(jnp.max(jnp.abs(got[1]))) > 0.01  # the check is not vacuous


def test_attention_override_and_cudnn_support(monkeypatch):
  """SMTJAX_ATTENTION forces one implementation (validated); which inputs cuDNN's fused path takes. Which
  path each platform's program uses: tests/test_export.py."""
  assert layers.forced_attention() is None
  monkeypatch.setenv('SMTJAX_ATTENTION', 'xla')
  assert layers.forced_attention() == 'xla'
  monkeypatch.setenv('SMTJAX_ATTENTION', 'flash')
  with pytest.raises(ValueError, match='SMTJAX_ATTENTION'):
    layers.forced_attention()
  assert layers.cudnn_supports(jnp.bfloat16, 64) and layers.cudnn_supports(jnp.float16, 128)
  assert not layers.cudnn_supports(jnp.float32, 64) and not layers.cudnn_supports(jnp.bfloat16, 12)
  assert not layers.cudnn_supports(jnp.bfloat16, 256) and not layers.cudnn_supports(jnp.bfloat16, 64, 3, 4)


@pytest.mark.parametrize('mask_kind', ['none', 'keys', 'full'])
@pytest.mark.parametrize('causal', [False, True])
def test_cudnn_path_pads_odd_lengths_exactly(mask_kind, causal, caplog, monkeypatch):
  """The CUDA path pads odd lengths by a masked key and a dropped query row (cuDNN's kernels need even ones). On
  this CPU it then takes XLA's path (float32, no cuDNN), which it logs once: the padded call must equal XLA's
  on the unpadded inputs."""
  monkeypatch.setattr(layers, '_FALLBACKS_LOGGED', set())  # as in a fresh process: no reason logged yet
  caplog.set_level(logging.DEBUG, logger='absl')  # off a GPU the fallback is a debug line
  B, L = 2, 7
  q, k, v = (jax.random.normal(jax.random.PRNGKey(i), (B, L, H, 8)) for i in range(3))
  keys = jnp.arange(L) < jnp.array([[L], [4]])  # [B, L]
  full = keys[:, None, :] & (jax.random.uniform(jax.random.PRNGKey(5), (B, L, L)) > 0.3)
  mask4 = {'none': None, 'keys': keys[:, None, None, :], 'full': full[:, None]}[mask_kind]
  got = layers._cudnn_attention(q, k, v, mask4, causal)
  want = layers._xla_attention(q, k, v, mask4, causal)
  assert got.shape == want.shape
  if mask4 is not None:  # a row that reads no key is `attend`'s to zero (its value here averages any keys)
    rows = layers._rows_with_keys(mask4[:, 0], causal, L)[:, :, None, None]
    got, want = jnp.where(rows, got, 0), jnp.where(rows, want, 0)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
  layers._cudnn_attention(q, k, v, mask4, causal)  # the same reason again: not logged again
  logged = [r.getMessage() for r in caplog.records if 'falls back to XLA' in r.getMessage()]
  assert len(logged) == 1 and 'float32 inputs with heads of width 8' in logged[0], logged


def test_fully_masked_rows_give_zeros_and_finite_gradients():
  B, L = 2, 6
  q, k, v = (jax.random.normal(jax.random.PRNGKey(i), (B, L, H, 8)) for i in range(3))
  keys = jnp.array([[False, False, True, True, True, True], [False] * L])  # row 1: nothing to read
  out = layers.attend(q, k, v, keys[:, None, :], is_causal=True)
  np.testing.assert_array_equal(np.asarray(out[0, :2]), 0.0)
  np.testing.assert_array_equal(np.asarray(out[1]), 0.0)
  assert np.all(np.abs(np.asarray(out[0, 2:])) > 0)
  g = jax.grad(lambda q, k, v: jnp.sum(layers.attend(q, k, v, keys[:, None, :], is_causal=True) ** 2),
               argnums=(0, 1, 2))(q, k, v)
  assert all(np.isfinite(np.asarray(x)).all() for x in g)
  # bfloat16 too
  out16 = layers.attend(q.astype(jnp.bfloat16), k.astype(jnp.bfloat16), v.astype(jnp.bfloat16), keys[:, None, :],
                        is_causal=True)
  assert np.isfinite(np.asarray(out16, np.float32)).all()


@pytest.mark.parametrize('pattern', ['decoder', 'cell', 'bidirectional'])
def test_block_equals_reference(pattern):
  """Block with the fused path (causal flag + key padding, or no mask) == the explicit-mask reference Block."""
  B, L = 3, 10
  x = jax.random.normal(jax.random.PRNGKey(0), (B, L, D))
  pos = jnp.broadcast_to(jnp.arange(L), (B, L))
  keys = jnp.ones((B, L), bool).at[1, -3:].set(False).at[2, 4].set(False)
  if pattern == 'bidirectional':  # left padding, as the window-mode encoder sees it
    keys = jnp.ones((B, L), bool).at[1, :3].set(False)
  blk = layers.Block(CFG, causal=pattern == 'decoder')
  params = RefBlock(CFG).init(jax.random.PRNGKey(1), x, pos, jnp.ones((B, L, L), bool))
  if pattern == 'cell':
    mask, full = None, jnp.ones((B, L, L), bool)
  else:
    mask = keys[:, None, :]
    full = jnp.broadcast_to(keys[:, None, :], (B, L, L))
    if pattern == 'decoder':
      full = full & jnp.tril(jnp.ones((L, L), bool))
  out = blk.apply(params, x, pos, mask)
  ref = RefBlock(CFG).apply(params, x, pos, full)
  np.testing.assert_allclose(out, ref, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize('window,chunk', [(0, 0), (0, 4), (0, 3), (3, 0), (3, 4), (0, 32)])
def test_prefix_groups_equal_reference(window, chunk):
  """Unchunked and chunked prefix groups (chunk not dividing G = T+1, larger than G, with a window and
  padding) == the dense reference implementation, values and gradients."""
  B, T, K = 3, 9, 2
  x = _tokens(B, T, pad_left=(0, 3), pad_mid=True)
  valid, pos, reg_pos, tok_mask, reads = ref_prefix_inputs(x, K, window)
  tok = jax.random.normal(jax.random.PRNGKey(0), (B, T, D))
  reg = jax.random.normal(jax.random.PRNGKey(1), (B, T + 1, K, D))
  ref_blk = RefBlock(CFG)
  params = ref_blk.init(jax.random.PRNGKey(2), tok, pos, tok_mask, reg, reg_pos, reads, method=RefBlock.prefix_groups)
  blk = layers.Block(CFG, window=window, prefix_chunk=chunk)

  def run(p, tok, reg):
    t, r = blk.apply(p, tok, pos, valid, reg, reg_pos, jnp.broadcast_to(jnp.arange(T + 1), (B, T + 1)),
                     method=layers.Block.prefix_groups)
    return t * valid[..., None], r  # padding tokens' own outputs are never read

  def ref(p, tok, reg):
    t, r = ref_blk.apply(p, tok, pos, tok_mask, reg, reg_pos, reads, method=RefBlock.prefix_groups)
    return t * valid[..., None], r

  out, want = jax.jit(run)(params, tok, reg), ref(params, tok, reg)
  for a, b in zip(out, want):
    np.testing.assert_allclose(a, b, atol=3e-5, rtol=3e-5)
  w_t = jax.random.normal(jax.random.PRNGKey(3), out[0].shape)
  w_r = jax.random.normal(jax.random.PRNGKey(4), out[1].shape)
  loss = lambda f: lambda p, tok, reg: jnp.sum(f(p, tok, reg)[0] * w_t) + jnp.sum(f(p, tok, reg)[1] * w_r)
  g = jax.jit(jax.grad(loss(run), argnums=(0, 1, 2)))(params, tok, reg)
  g_ref = jax.grad(loss(ref), argnums=(0, 1, 2))(params, tok, reg)
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, b, atol=5e-5, rtol=5e-5)


@pytest.mark.parametrize('window', [0, 4])
def test_chunked_prefix_memories_equal_unchunked(window):
  """The whole encoder (2 layers, remat on) with chunks of 4 groups at T=11 (G=12, chunks pad to 12... and
  chunks of 5: G=12 not divisible) equals the unchunked encoder; gradients too."""
  c = tiny_config()
  c.model.enc_depth, c.model.attn_window, c.model.remat = 2, window, True
  nets0 = models.Networks.from_config(c)
  params = jax.jit(nets0.init)(jax.random.PRNGKey(0))
  x = _tokens(3, 11, seed=5, pad_left=(0, 4), pad_mid=True)
  w = jax.random.normal(jax.random.PRNGKey(1), (3, 12, c.model.num_mem_tokens, c.model.d_model))
  loss = lambda nets: jax.jit(jax.value_and_grad(lambda p: jnp.sum(nets.prefix_memories(p, x) * w)))
  want_l, want_g = loss(nets0)(params)
  for chunk in (4, 5):
    c.model.prefix_chunk = chunk
    nets = models.Networks.from_config(c)
    np.testing.assert_allclose(jax.jit(nets.prefix_memories)(params, x), jax.jit(nets0.prefix_memories)(params, x),
                               atol=1e-5, rtol=1e-5)
    l, g = loss(nets)(params)
    np.testing.assert_allclose(l, want_l, rtol=1e-5, atol=1e-4)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(want_g)):
      np.testing.assert_allclose(a, b, atol=5e-5, rtol=1e-4)


def test_chunked_scores_are_linear_in_T():
  """The compiled program's temporary memory: chunked grows about linearly in T, unchunked quadratically."""
  c = tiny_config()
  c.model.d_model, c.model.num_heads, c.model.num_mem_tokens, c.model.enc_depth = 16, 2, 8, 1

  def temp_bytes(T, chunk):
    c.model.prefix_chunk = chunk
    nets = models.Networks.from_config(c)
    params = jax.eval_shape(nets.init, jax.random.PRNGKey(0))
    x = jax.ShapeDtypeStruct((2, T), jnp.int32)
    f = jax.jit(jax.grad(lambda p, x: jnp.sum(nets.prefix_memories(p, x) ** 2)))
    return f.lower(params, x).compile().memory_analysis().temp_size_in_bytes

  dense = temp_bytes(512, 0) / temp_bytes(256, 0)
  chunked = temp_bytes(512, 16) / temp_bytes(256, 16)
  assert dense > 3.0, dense  # the [B, H, G, K, T] scores dominate
  assert chunked < 2.6, chunked


@pytest.mark.parametrize('T,window', [(11, 3), (12, 4), (5, 2)])
def test_band_attention_equals_windowed_causal_attention(T, window):
  """Blocks of `window` queries reading their own and the previous block == dense attention under the causal
  window mask (T not a multiple of the window, invalid keys, a row with no valid key); gradients too."""
  B = 3
  q, k, v = (jax.random.normal(jax.random.PRNGKey(i), (B, T, H, 8)) for i in range(3))
  valid = jax.random.uniform(jax.random.PRNGKey(3), (B, T)) > 0.3
  valid = valid.at[0].set(True).at[2, :].set(False).at[2, -1].set(True)
  i, j = jnp.arange(T)[:, None], jnp.arange(T)[None, :]
  mask = valid[:, None, :] & (j <= i) & (i - j < window)
  band = lambda q, k, v: layers.band_attention(q, k, v, valid, window)
  dense = lambda q, k, v: layers.attend(q, k, v, mask)
  np.testing.assert_allclose(jax.jit(band)(q, k, v), dense(q, k, v), atol=1e-5, rtol=1e-5)
  w = jax.random.normal(jax.random.PRNGKey(4), q.shape)
  grad = lambda f: jax.jit(jax.grad(lambda *a: jnp.sum(f(*a) * w), argnums=(0, 1, 2)))(q, k, v)
  for a, b in zip(grad(band), grad(dense)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_windowed_prefix_memories_cost_linear_in_T():
  """With an attention window (16 << T) the compiled program's temporary memory grows about linearly in T
  (the band and each group's gathered window), where without one the [T, T] scores grow it quadratically."""
  c = tiny_config()
  c.model.d_model, c.model.num_heads, c.model.num_mem_tokens, c.model.enc_depth = 16, 2, 2, 1

  def temp_bytes(T, window):
    c.model.attn_window = window
    nets = models.Networks.from_config(c)
    params = jax.eval_shape(nets.init, jax.random.PRNGKey(0))
    x = jax.ShapeDtypeStruct((2, T), jnp.int32)
    f = jax.jit(jax.grad(lambda p, x: jnp.sum(nets.prefix_memories(p, x) ** 2)))
    return f.lower(params, x).compile().memory_analysis().temp_size_in_bytes

  assert temp_bytes(1024, 0) / temp_bytes(512, 0) > 3.0
  assert temp_bytes(1024, 16) / temp_bytes(512, 16) < 2.4


def test_prefix_chunk_is_validated():
  c = tiny_config()
  c.model.prefix_chunk = -1
  with pytest.raises(config_lib.ConfigError, match='model.prefix_chunk'):
    config_lib.validate(c)


@pytest.mark.parametrize('features,in_dims,split,shape', [((3, 2, 8), 1, False, (2, 5, 16)),
                                                          ((3, 2, 8), 1, True, (2, 5, 16)),
                                                          ((16,), 2, False, (2, 3, 5, 2, 8))])
def test_projection_equals_dense_general(features, in_dims, split, shape):
  """The 2-D-product Projection draws and applies the same kernel as nn.DenseGeneral (the module it replaces:
  checkpoints and seeds carry over), gradients included; `split` returns the slices of the first feature axis."""
  x = jax.random.normal(jax.random.PRNGKey(0), shape)
  new = layers.Projection(features, in_dims=in_dims, split=split)
  old = nn.DenseGeneral(features, axis=tuple(range(-in_dims, 0)), use_bias=False,
                        kernel_init=nn.initializers.normal(0.02))
  p_new, p_old = new.init(jax.random.PRNGKey(1), x), old.init(jax.random.PRNGKey(1), x)
  np.testing.assert_array_equal(np.asarray(p_new['params']['kernel']), np.asarray(p_old['params']['kernel']))
  out = new.apply(p_new, x)
  if split:
    assert isinstance(out, tuple) and len(out) == features[0]
    out = jnp.stack(out, axis=x.ndim - in_dims)
  np.testing.assert_allclose(np.asarray(out), np.asarray(old.apply(p_old, x)), atol=1e-6)
  whole = (lambda p, x: jnp.stack(new.apply(p, x), axis=-3)) if split else new.apply
  g_new = jax.grad(lambda p, x: jnp.sum(jnp.sin(whole(p, x))), argnums=(0, 1))(p_new, x)
  g_old = jax.grad(lambda p, x: jnp.sum(jnp.sin(old.apply(p, x))), argnums=(0, 1))(p_old, x)
  for a, b in zip(jax.tree.leaves(g_new), jax.tree.leaves(g_old)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
