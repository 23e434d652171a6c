"""Networks: shapes and dtypes, causality by gradients, padding invariance, prefix memories."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from smtjax import layers, models
from tests.conftest import JittedNetworks, tiny_config

B, T = 3, 7


def _nets(**model_overrides):
  c = tiny_config()
  c.model.d_model = 32
  c.model.num_mem_tokens = 3
  c.model.enc_depth = 2
  c.model.dec_depth = 2
  for k, v in model_overrides.items():
    c.model[k] = v
  nets = models.Networks.from_config(c)
  return c, JittedNetworks(nets), jax.jit(nets.init)(jax.random.PRNGKey(0))


def _tokens(seed=1, shape=(B, T), vocab=10):
  return jax.random.randint(jax.random.PRNGKey(seed), shape, 0, vocab)


@pytest.mark.parametrize('cell', ['transformer', 'gru', 'mlp'])
@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
def test_shapes_and_dtypes(cell, dtype):
  c, nets, params = _nets(cell=cell, dtype=dtype)
  K, D, V = 3, 32, c.model.vocab_size
  chex.assert_trees_all_equal_dtypes(params, jax.tree.map(lambda p: jnp.zeros((), jnp.float32), params))
  x = _tokens()
  mem = nets.encode(params, x)
  chex.assert_shape(mem, (B, K, D))
  chex.assert_type(mem, jnp.float32)
  # Memory tokens are RMS-normalised (no learned scale).
  np.testing.assert_allclose(jnp.sqrt(jnp.mean(mem ** 2, -1)), 1.0, atol=2e-2 if dtype == 'bfloat16' else 2e-3)
  chex.assert_shape(nets.prefix_memories(params, x), (B, T + 1, K, D))
  logits = nets.decode(params, mem, x[:, :4])
  chex.assert_shape(logits, (B, 5, V))
  chex.assert_type(logits, jnp.float32)
  new = nets.step(params, mem, x[:, 0])
  chex.assert_shape(new, (B, K, D))
  np.testing.assert_allclose(jnp.sqrt(jnp.mean(new ** 2, -1)), 1.0, atol=2e-2 if dtype == 'bfloat16' else 2e-3)
  chex.assert_shape(nets.readout(params, mem), (B, V))
  mems = nets.rollout(params, mem, x)
  chex.assert_shape(mems, (B, T, K, D))
  chex.assert_shape(nets.readout_all(params, mems), (B, T, V))
  chex.assert_tree_all_finite((mem, logits, new, mems))


def test_decoder_is_causal():
  """d logits[j] / d future_emb[i] is exactly zero for i >= j (prediction j has read inputs 0..j-1)."""
  c, nets, params = _nets()
  F = 5
  mem = nets.encode(params, _tokens())
  fut = _tokens(2, (B, F))
  emb = jax.random.normal(jax.random.PRNGKey(3), (B, F, 32))

  def out(e, j):
    return nets.decoder.apply({'params': params['decoder']}, mem, fut, future_emb=e)[:, j].sum()

  for j in range(F + 1):
    g = jax.jit(jax.grad(out), static_argnums=1)(emb, j)
    later = jnp.abs(g[:, j:]).max() if j < F else 0.0
    assert later == 0.0, f'prediction {j} depends on future input >= {j}'
    if j > 0:
      assert jnp.abs(g[:, :j]).max() > 0, 'prediction should depend on earlier inputs'


PUBLISHED = dict(head_dim=8, rotary_fraction=0.5, use_bias=True, final_norm=True, share_embedding=True,
                 gelu_exact=True)  # the public architecture's options (variants.published), at test size


@pytest.mark.parametrize('options,atol', [
    ({}, 2e-5),
    (PUBLISHED, 2e-5),
    (dict(PUBLISHED, dtype='bfloat16', residual_dtype='float32'), 3e-2),  # bf16 products: equal to bf16 rounding
    (dict(dtype='bfloat16'), 6e-2),  # bf16 residual stream too
])
def test_prefix_memories_equal_encoder_on_prefix(options, atol):
  """One causal pass gives the memory of every prefix: equal to encoding each prefix alone, under smtjax's
  and the published architecture, and in bfloat16 (there only up to rounding: the two programs round in
  different places; a real mistake, e.g. a leak of a later token, moves memories by O(1))."""
  c, nets, params = _nets(**options)
  x = _tokens()
  pm = nets.prefix_memories(params, x)
  for L in range(T + 1):
    ref = nets.encode(params, x[:, :L]) if L else nets.initial_memory(params, B)
    np.testing.assert_allclose(pm[:, L], ref, atol=atol, err_msg=f'prefix length {L}')


@pytest.mark.parametrize('options', [{}, {'attn_window': 3}, {'prefix_chunk': 2}, {'remat': True, 'prefix_chunk': 3}])
def test_chosen_prefix_memories_equal_the_full_pass(options):
  """Only the register groups of chosen prefix lengths (any order, repeats, the empty prefix and the whole
  sequence, other choices per row, padding): the same memories, and the same gradients, as those entries of
  the pass over every prefix."""
  c, nets, params = _nets(**options)
  x = _tokens().at[1, :2].set(-1).at[2, 3].set(-1)  # leading and inner padding
  lengths = jnp.array([[7, 0, 3, 3, 5], [1, 7, 2, 0, 4], [6, 6, 6, 4, 0]])
  w = jax.random.normal(jax.random.PRNGKey(3), lengths.shape + (3, 32))
  chosen = lambda p: nets.nets.prefix_memories(p, x, lengths)
  gathered = lambda p: jnp.take_along_axis(nets.nets.prefix_memories(p, x), lengths[:, :, None, None], axis=1)
  np.testing.assert_allclose(jax.jit(chosen)(params), jax.jit(gathered)(params), atol=1e-5, rtol=1e-5)
  g = jax.jit(jax.grad(lambda p: jnp.sum(chosen(p) * w)))(params)
  g_full = jax.jit(jax.grad(lambda p: jnp.sum(gathered(p) * w)))(params)
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_full)):
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


def test_residual_stream_dtype():
  """model.residual_dtype='float32' under bfloat16 products: memories are not bfloat16-rounded (as under
  torch.autocast); without it they are."""
  x = _tokens()
  mems = {}
  for residual in ('', 'float32'):
    c, nets, params = _nets(dtype='bfloat16', residual_dtype=residual, final_norm=True)
    mems[residual] = np.asarray(nets.encode(params, x))
  as_bf16 = lambda a: np.asarray(jnp.asarray(a).astype(jnp.bfloat16).astype(jnp.float32))
  np.testing.assert_array_equal(mems[''], as_bf16(mems['']))  # every value a bfloat16 number
  assert np.abs(mems['float32'] - as_bf16(mems['float32'])).max() > 0


def test_prefix_memories_are_causal():
  """d m_t / d x_s = 0 exactly for s > t (memory after L tokens never sees token L or later)."""
  c, nets, params = _nets()
  x = _tokens()
  emb = jax.random.normal(jax.random.PRNGKey(4), (B, T, 32))
  for L in (0, 3, T):
    g = jax.jit(jax.grad(lambda e, L=L: nets.encoder.apply({'params': params['encoder']}, x, tok_emb=e,
                                               method=models.Encoder.prefix_memories)[:, L].sum()))(emb)
    if L < T:
      assert jnp.abs(g[:, L:]).max() == 0.0
    if L > 0:
      assert jnp.abs(g[:, :L]).max() > 0


@pytest.mark.parametrize('attention', ['causal', 'bidirectional'])
def test_padding_does_not_change_memory(attention):
  c, nets, params = _nets(encoder_attention=attention)
  x = _tokens()
  padded = jnp.concatenate([jnp.full((B, 4), -1), x], axis=1)
  np.testing.assert_allclose(nets.encode(params, padded), nets.encode(params, x), atol=1e-5)
  if attention == 'causal':
    pm = nets.prefix_memories(params, padded)
    np.testing.assert_allclose(pm[:, -1], nets.encode(params, x), atol=1e-5)
    np.testing.assert_allclose(pm[:, 4], nets.initial_memory(params, B), atol=1e-5)
  # A padding input leaves the RNN memory unchanged; a real one changes it.
  mem = nets.encode(params, x)
  np.testing.assert_array_equal(nets.step(params, mem, jnp.full((B,), -1)), mem)
  assert jnp.abs(nets.step(params, mem, x[:, 0]) - mem).max() > 1e-3


def test_attention_window_limits_what_memory_reads():
  c, nets, params = _nets(attn_window=2)
  x = _tokens()
  x2 = x.at[:, 0].set((x[:, 0] + 1) % 10)  # change a token far outside the window
  # With depth 2 the receptive field is 2 windows: tokens more than 2*2 back are invisible.
  np.testing.assert_allclose(nets.encode(params, x2), nets.encode(params, x), atol=1e-6)
  pm = nets.prefix_memories(params, x)
  for L in (2, 5, T):
    np.testing.assert_allclose(pm[:, L], nets.encode(params, x[:, :L]), atol=2e-5)


def test_rollout_equals_step_loop():
  c, nets, params = _nets(cell='gru')
  x = _tokens().at[1, 2].set(-1)
  mem = nets.initial_memory(params, B)
  mems = nets.rollout(params, mem, x)
  for t in range(T):
    mem = nets.step(params, mem, x[:, t])
    np.testing.assert_allclose(mems[:, t], mem, atol=1e-5)


def test_remat_gives_same_gradients():
  c, nets, params = _nets()
  _, nets_r, _ = _nets(remat=True)
  x = _tokens()
  f = lambda n: jax.jit(jax.grad(lambda p: n.decode(p, n.prefix_memories(p, x)[:, 3], x[:, :3]).sum()))(params)
  chex.assert_trees_all_close(f(nets), f(nets_r), atol=1e-5)


def test_rotary_is_relative():
  q = jax.random.normal(jax.random.PRNGKey(0), (1, 1, 2, 8))
  k = jax.random.normal(jax.random.PRNGKey(1), (1, 1, 2, 8))
  dot = lambda a, b: jnp.sum(layers.rotary(q, jnp.array([[a]]), 11) * layers.rotary(k, jnp.array([[b]]), 11))
  np.testing.assert_allclose(dot(3, 1), dot(10, 8), rtol=1e-5)
  assert abs(dot(3, 1) - dot(3, 2)) > 1e-4


def test_partial_rotary_rotates_the_first_fraction_only():
  """rotary(x, pos, 0.5) against its definition: feature pairs (i, i + r/2) of the first r = Dh/2 features
  turn by pos * 10000^(-2i/r) (frequencies over the rotated width, as in x-transformers); the rest pass."""
  x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (2, 5, 3, 16)))
  pos = np.broadcast_to(np.arange(5) * 3, (2, 5))
  got = np.asarray(layers.rotary(jnp.asarray(x), jnp.asarray(pos), 13, 0.5))  # a table of positions 0..12
  r = 8
  ang = pos[..., None, None] * 10000.0 ** (-2 * np.arange(r // 2) / r)  # [2, 5, 1, r/2]
  a, b = x[..., :r // 2], x[..., r // 2:r]
  want = np.concatenate([a * np.cos(ang) - b * np.sin(ang), a * np.sin(ang) + b * np.cos(ang), x[..., r:]], -1)
  np.testing.assert_allclose(got, want, atol=1e-5)
  # A larger table reads the same angles; a position past the table is NaN.
  table = np.asarray(layers.rotary(jnp.asarray(x), jnp.asarray(pos), 64, 0.5))
  np.testing.assert_allclose(table, want, atol=1e-5)
  past = np.asarray(layers.rotary(jnp.asarray(x), jnp.asarray(pos), 12, 0.5))
  assert np.isnan(past[:, 4, :, :r]).all() and not np.isnan(past[:, :4]).any()
  np.testing.assert_array_equal(past[..., r:], x[..., r:])


def test_gelu_erf_is_the_exact_gelu():
  """The erf form (torch.nn.GELU()'s) against jax.nn.gelu's erfc form, values and gradients, over the range
  where either differs from 0 or x."""
  x = jnp.linspace(-12, 12, 4001, dtype=jnp.float32)
  exact = lambda v: jax.nn.gelu(v, approximate=False)
  np.testing.assert_allclose(layers.gelu_erf(x), exact(x), atol=2e-6, rtol=1e-6)
  grad = lambda f: jax.vmap(jax.grad(f))(x)
  np.testing.assert_allclose(grad(layers.gelu_erf), grad(exact), atol=1e-6)
  assert float(jnp.max(jnp.abs(layers.gelu_erf(x) - jax.nn.gelu(x, approximate=True)))) > 1e-4  # not the tanh form


PUBLIC_ARCH = dict(head_dim=8, rotary_fraction=0.5, use_bias=True, final_norm=True, share_embedding=True)


def test_public_architecture_options():
  """Head width and biases show in the parameter shapes; the final norms exist; the decoder has no
  embedding of its own and reads the encoder's (its loss trains it)."""
  c, nets, params = _nets(**PUBLIC_ARCH, num_heads=2)
  blk = params['encoder']['block_0']
  assert blk['attn']['qkv_proj']['kernel'].shape == (32, 3, 2, 8)  # heads of width 8 in d_model 32
  assert blk['attn']['out_proj']['kernel'].shape == (2, 8, 32) and 'bias' not in blk['attn']['out_proj']
  assert {'bias', 'kernel'} == set(blk['mlp']['Dense_0']) == set(params['cell']['block_0']['mlp']['Dense_1'])
  assert 'bias' in params['decoder']['head']
  assert 'norm_out' in params['encoder'] and 'norm_out' in params['cell']
  assert 'embed' not in params['decoder'] and 'embed' in params['encoder'] and 'embed' in params['cell']
  x = _tokens()
  mem = nets.encode(params, x)
  fut = _tokens(2, (B, 4))
  g = jax.jit(jax.grad(lambda p: nets.nets.decode(p, mem, fut).sum()))(params)
  assert jnp.abs(g['encoder']['embed']['embedding']).max() > 0
  shifted = {'embedding': params['encoder']['embed']['embedding'] + 1}
  other = dict(params, encoder=dict(params['encoder'], embed=shifted))
  assert jnp.abs(nets.decode(other, mem, fut)[:, 1:] - nets.decode(params, mem, fut)[:, 1:]).max() > 1e-4
  np.testing.assert_array_equal(nets.decode(other, mem, fut)[:, 0], nets.decode(params, mem, fut)[:, 0])
  chex.assert_shape(nets.readout(params, mem), (B, c.model.vocab_size))
  chex.assert_shape(nets.prefix_memories(params, x), (B, T + 1, 3, 32))
  chex.assert_tree_all_finite(nets.step(params, mem, x[:, 0]))


def _count(tree) -> int:
  return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


def test_published_tinystories_parameter_counts_match_the_public_networks():
  """configs/tinystories.py against the public code's networks counted from their definition
  (x-transformers defaults: 64-wide heads, q/k/v/out projections without bias, MLP x4 with biases, two
  RMSNorm scales per layer and a final one; nn.Linear logits with bias; one embedding in the teacher)."""
  from configs import tinystories
  c = tinystories.get_config()
  nets = models.Networks.from_config(c)
  shapes = jax.eval_shape(nets.init, jax.random.PRNGKey(0))
  d, V, K, heads, dh = 256, 256, 16, 8, 64  # method.md §8 and x-transformers' default head width
  layer = 4 * d * heads * dh + (2 * d * 4 * d + 4 * d + d) + 2 * d
  stack = lambda depth: depth * layer + d
  teacher = V * d + K * d + stack(8) + stack(4) + (d * V + V)  # embed, registers, encoder, decoder, to_logits
  rnn_cell = V * d + stack(8)  # its own embedding and 8 blocks (its readout is the decoder)
  assert _count(shapes['encoder']) + _count(shapes['decoder']) == teacher
  assert _count(shapes['cell']) == rnn_cell
