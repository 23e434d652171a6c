"""Each loss term against a direct NumPy computation, and the SMT objectives against their definitions."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from smtjax import config as config_lib
from smtjax import losses, models, optim, smt
from tests.conftest import JittedNetworks, tiny_config


def _np_log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_decoder_loss_matches_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(4, 5, 7)).astype(np.float32)
  targets = rng.integers(0, 7, size=(4, 5))
  targets[0, 2] = targets[3, 0] = targets[1, 4] = -1
  gamma = 0.8
  lp = _np_log_softmax(logits.astype(np.float64))
  num = den = 0.0
  for b in range(4):
    for j in range(5):
      if targets[b, j] >= 0:
        num += gamma ** j * -lp[b, j, targets[b, j]]
        den += gamma ** j
  ce0 = [-lp[b, 0, targets[b, 0]] for b in range(4) if targets[b, 0] >= 0]
  loss, loss0 = losses.decoder_loss(jnp.asarray(logits), jnp.asarray(targets), gamma)
  np.testing.assert_allclose(loss, num / den, rtol=1e-5)
  np.testing.assert_allclose(loss0, np.mean(ce0), rtol=1e-5)


def test_all_masked_targets_give_zero_not_nan():
  loss, loss0 = losses.decoder_loss(jnp.zeros((2, 3, 5)), -jnp.ones((2, 3), jnp.int32))
  assert loss == 0.0 and loss0 == 0.0


def test_accuracy_ignores_masked():
  logits = jnp.eye(4)[None]  # argmax = position index
  np.testing.assert_allclose(losses.accuracy(logits, jnp.array([[0, 2, -1, 3]])), 2 / 3)


def test_dynamics_loss_matches_numpy_and_detach():
  rng = np.random.default_rng(1)
  pred, tgt = rng.normal(size=(2, 6, 3, 4)).astype(np.float32)
  mask = np.array([1, 0, 1, 1, 0, 1], bool)
  want = np.mean(((pred - tgt) ** 2).mean((1, 2))[mask])
  np.testing.assert_allclose(losses.dynamics_loss(pred, tgt, mask), want, rtol=1e-6)
  np.testing.assert_allclose(losses.dynamics_loss(pred, tgt), ((pred - tgt) ** 2).mean(), rtol=1e-6)
  g = jax.grad(lambda t: losses.dynamics_loss(pred, t, detach_target=True))(jnp.asarray(tgt))
  assert jnp.abs(g).max() == 0.0
  g = jax.grad(lambda t: losses.dynamics_loss(pred, t))(jnp.asarray(tgt))
  assert jnp.abs(g).max() > 0.0


def test_uniformity_loss_matches_numpy():
  z = np.random.default_rng(2).normal(size=(9, 5))
  zn = z / np.linalg.norm(z, axis=-1, keepdims=True)
  vals = [np.exp(-2.0 * np.sum((zn[i] - zn[j]) ** 2)) for i in range(9) for j in range(i + 1, 9)]
  got = losses.uniformity_loss(jnp.asarray(z, jnp.float32), jax.random.PRNGKey(0), num_samples=512, t=2.0)
  np.testing.assert_allclose(got, np.log(np.mean(vals)), rtol=1e-5)
  # Collapsed memories give the maximum (0), spread ones a lower value.
  same = jnp.ones((10, 5))
  np.testing.assert_allclose(losses.uniformity_loss(same, jax.random.PRNGKey(0)), 0.0, atol=1e-6)


def _np_uniformity(z, t=2.0):
  """log mean_{i<j} exp(-t ||z_i - z_j||^2) over L2-normalised rows, straight from the definition."""
  z = np.asarray(z, np.float64)
  z = z / np.linalg.norm(z, axis=-1, keepdims=True)
  n = len(z)
  return np.log(np.mean([np.exp(-t * np.sum((z[i] - z[j]) ** 2)) for i in range(n) for j in range(i + 1, n)]))


def test_uniformity_loss_subsamples_without_replacement():
  """Properties of the subsample, not a replay of its draw: distinct rows only, different draws for
  different keys, and the pair mean exp(L) is an unbiased estimate of the full set's."""
  keys = jax.random.split(jax.random.PRNGKey(7), 300)
  f = jax.jit(jax.vmap(lambda z, k: losses.uniformity_loss(z, k, num_samples=12), in_axes=(None, 0)))
  # 50 orthonormal rows: every pair of distinct rows is at squared distance 2, so any subsample without
  # repeats gives exactly -2t = -4; a repeated row (a pair at distance 0) would raise it.
  np.testing.assert_allclose(f(jnp.eye(50), keys[:20]), -4.0, atol=1e-5)
  z = np.random.default_rng(3).normal(size=(50, 4))
  draws = np.asarray(f(jnp.asarray(z, jnp.float32), keys), np.float64)
  assert len(np.unique(draws.round(6))) > 250  # really random subsets, not a fixed one
  full = np.exp(_np_uniformity(z))
  se = np.exp(draws).std() / np.sqrt(len(draws))
  assert abs(np.exp(draws).mean() - full) < 4 * se, (np.exp(draws).mean(), full, se)


def _setup(mode, **smt_overrides):
  c = tiny_config(mode)
  for k, v in smt_overrides.items():
    c.smt[k] = v
  nets = models.Networks.from_config(c)
  params = jax.jit(nets.init)(jax.random.PRNGKey(0))
  r = np.random.default_rng(4)
  x = r.integers(0, 10, size=(3, c.data.seq_len)).astype(np.int32)
  y = r.integers(0, 10, size=(3, c.data.seq_len)).astype(np.int32)
  y[:, ::3] = -1
  return c, JittedNetworks(nets), params, {'x': jnp.asarray(x), 'y': jnp.asarray(y)}


def test_window_losses_follow_public_indexing():
  c, nets, params, batch = _setup('window')
  x, y = batch['x'], batch['y']
  s = c.smt
  Tc, Tf = s.context, s.future = 4, 4
  rng = jax.random.PRNGKey(0)
  total, m = jax.jit(lambda p, b, r: smt.window_losses(nets.nets, p, b, r, c))(params, batch, rng)
  m_t, m_next = nets.encode(params, x[:, 0:Tc]), nets.encode(params, x[:, 1:Tc + 1])
  dyn = np.mean((np.asarray(nets.step(params, m_t, x[:, Tc])) - np.asarray(m_next)) ** 2)
  logits = nets.decode(params, m_t, x[:, Tc:Tc + Tf])[:, :Tf]  # the last input's prediction is unused
  dec, dec0 = losses.decoder_loss(logits, y[:, Tc - 1:Tc + Tf - 1])
  np.testing.assert_allclose(m['loss_dyn'], dyn, rtol=1e-4)
  np.testing.assert_allclose(m['loss_dec'], dec, rtol=1e-4)
  np.testing.assert_allclose(m['loss_dec0'], dec0, rtol=1e-4)
  # Uniformity over the tokens of m_t only (the public code), B*K = 6 tokens: no subsampling.
  unif = _np_uniformity(np.asarray(m_t).reshape(-1, m_t.shape[-1]))
  np.testing.assert_allclose(m['loss_unif'], unif, rtol=1e-4)
  np.testing.assert_allclose(total, dec + 0.1 * dyn + 0.001 * unif, rtol=1e-5)


@pytest.mark.parametrize('Tf', [3, 1])
def test_parallel_losses_equal_per_prefix_definition(Tf):
  """All transitions and all decoded memories, computed prefix by prefix with the encoder alone (Tf = 1: each
  memory predicts its next target alone, with no future inputs)."""
  c, nets, params, batch = _setup('parallel', num_transitions=0, num_decoder_samples=0, future=Tf, gamma=0.9)
  x, y = np.asarray(batch['x']), np.asarray(batch['y'])
  B, T = x.shape
  mem = lambda L: nets.encode(params, x[:, :L]) if L else nets.initial_memory(params, B)
  dyn = np.mean([np.mean((np.asarray(nets.step(params, mem(L), x[:, L])) - np.asarray(mem(L + 1))) ** 2)
                 for L in range(T)])
  num = den = 0.0
  for L in range(T + 1):
    fut = np.full((B, Tf - 1), -1, np.int32)
    k = min(Tf - 1, T - L)
    fut[:, :k] = x[:, L:L + k]
    tgt = np.full((B, Tf), -1, np.int32)
    for j in range(Tf):
      if 0 <= L - 1 + j < T:
        tgt[:, j] = y[:, L - 1 + j]
    ce, valid = losses.token_cross_entropy(nets.decode(params, mem(L), jnp.asarray(fut)), jnp.asarray(tgt))
    w = 0.9 ** np.arange(Tf) * np.asarray(valid)
    num += np.sum(w * np.asarray(ce))
    den += np.sum(w)
  _, m = jax.jit(lambda p, b, r: smt.parallel_losses(nets.nets, p, b, r, c))(params, batch, jax.random.PRNGKey(0))
  np.testing.assert_allclose(m['loss_dyn'], dyn, rtol=1e-4)
  np.testing.assert_allclose(m['loss_dec'], num / den, rtol=1e-4)


def test_sampled_uniformity_loss_counts_each_memory_once():
  """With sampled memories the uniformity loss is over the decoded memories (distinct prefixes of each
  sequence), not over the starts' memories and their targets as well, which repeat some of them."""
  c, nets, params, batch = _setup('parallel', num_transitions=2, num_decoder_samples=3)
  x = np.asarray(batch['x'])
  B, T = x.shape
  rng = jax.random.PRNGKey(3)
  _, m = jax.jit(lambda p, b, r: smt.parallel_losses(nets.nets, p, b, r, c))(params, batch, rng)
  _, r_dec, _ = jax.random.split(rng, 3)
  reads, _ = smt.sample_positions(r_dec, B, T + 1, 3)
  mem = lambda L: nets.encode(params, x[:, :L]) if L else nets.initial_memory(params, B)
  every = np.stack([np.asarray(mem(L)) for L in range(T + 1)], axis=1)  # [B, T+1, K, D]
  decoded = np.take_along_axis(every, np.asarray(reads)[:, :, None, None], axis=1)
  assert decoded.size // decoded.shape[-1] <= c.smt.unif_samples  # every decoded token counted, none drawn out
  np.testing.assert_allclose(m['loss_unif'], _np_uniformity(decoded.reshape(-1, decoded.shape[-1])), rtol=1e-4)


def test_sample_positions_cover_each_stratum_once():
  idx, w = map(np.asarray, smt.sample_positions(jax.random.PRNGKey(0), 64, 13, 4))  # strata 0-2, 3-5, 6-8, 9-12
  np.testing.assert_array_equal(w, [3, 3, 3, 4])
  lo, hi = np.array([0, 3, 6, 9]), np.array([3, 6, 9, 13])
  assert ((idx >= lo) & (idx < hi)).all() and len(np.unique(idx)) == 13  # every position drawn somewhere
  every, w = smt.sample_positions(jax.random.PRNGKey(0), 2, 5, 0)  # 0 or S >= G: each position once
  np.testing.assert_array_equal(every, [list(range(5))] * 2)
  np.testing.assert_array_equal(w, np.ones(5))
  np.testing.assert_array_equal(smt.sample_positions(jax.random.PRNGKey(0), 2, 5, 9)[0], every)


def test_pair_counts_and_target_weights_count_every_term():
  T, n, Tf, g = 7, 3, 4, 0.8
  pairs = np.zeros(T)
  for L in range(T + 1 - n):
    for j in range(n):
      pairs[L + j] += 1
  np.testing.assert_array_equal(smt.pair_counts(T, n), pairs)
  w = np.zeros(T)
  for L in range(T + 1):
    for j in range(Tf):
      if 0 <= L - 1 + j < T:
        w[L - 1 + j] += g ** j
  np.testing.assert_allclose(smt.target_weights(T, Tf, g), w)


@pytest.mark.parametrize('rollout_steps', [1, 2])
def test_sampled_losses_and_their_gradient_are_unbiased(rollout_steps):
  """Sampled transitions and decoded memories (smt.num_transitions=2 of 8, num_decoder_samples=3 of 9, on
  targets with gaps): averaged over 512 draws, loss_dec, loss_dec0 and loss_dyn are within 4 standard errors of
  decoding every memory and training every transition, and so is the gradient of the total (uniformity off: a
  log of a sampled mean, biased by construction): the squared distance of the mean gradient from the full one,
  over its expected value trace(Cov)/n, is below 3 (about 1 without bias; a bias makes it grow with n)."""
  c, nets, params, batch = _setup('parallel', num_transitions=0, num_decoder_samples=0, coef_unif=0.0,
                                  rollout_steps=rollout_steps, gamma=0.9)
  y = np.array(batch['y'])
  y[0, 4:] = -1  # one sequence with fewer targets: the per-memory counts differ
  batch = dict(batch, y=jnp.asarray(y))
  names = ('loss_dec', 'loss_dec0', 'loss_dyn')

  def fn(cfg):
    def f(p, r):
      total, m = smt.parallel_losses(nets.nets, p, batch, r, cfg)
      return total, jnp.stack([m[k] for k in names])
    return jax.jit(jax.vmap(jax.value_and_grad(f, has_aux=True), in_axes=(None, 0)))

  keys = jax.random.split(jax.random.PRNGKey(1), 512)
  (_, full), g_full = fn(c)(params, keys[:1])
  c.smt.num_transitions, c.smt.num_decoder_samples = 2, 3
  (_, draws), g = fn(c)(params, keys)
  draws = np.asarray(draws, np.float64)
  assert (draws.std(0) > 0).all()  # really sampled
  se = draws.std(0) / np.sqrt(len(keys))
  assert (np.abs(draws.mean(0) - np.asarray(full[0])) < 4 * se).all(), (draws.mean(0), full[0], se)
  flat = np.concatenate([np.asarray(v, np.float64).reshape(len(keys), -1) for v in jax.tree.leaves(g)], axis=1)
  want = np.concatenate([np.asarray(v, np.float64).reshape(-1) for v in jax.tree.leaves(g_full)])
  ratio = np.sum((flat.mean(0) - want) ** 2) / (flat.var(0).sum() / len(keys))
  assert ratio < 3.0, ratio


def _max_abs(tree):
  return max(float(jnp.abs(v).max()) for v in jax.tree.leaves(tree))


@pytest.mark.parametrize('trainable,frozen', [('rnn', ('encoder', 'decoder')), ('teacher', ('cell',))])
def test_trainable_option_stops_gradients(trainable, frozen):
  """The config's optimizer leaves exactly the frozen networks unchanged; with a frozen teacher its
  memories are constants, so the encoder gets no gradient and the cell's is that of coef_dyn * L_dyn on
  fixed memories."""
  c, nets, params, batch = _setup('parallel', trainable=trainable, num_transitions=0)
  x = batch['x']
  g = jax.jit(jax.grad(lambda p: smt.parallel_losses(nets.nets, p, batch, jax.random.PRNGKey(0), c)[0]))(params)
  tx, _ = optim.make_optimizer(c, config_lib.frozen_networks(c))
  updates, _ = jax.jit(tx.update)(g, tx.init(params), params)
  for net in params:
    if net in frozen:
      assert _max_abs(updates[net]) == 0.0, net
    else:
      assert _max_abs(updates[net]) > 0.0, net
  if trainable == 'rnn':
    assert _max_abs(g['encoder']) == 0.0
    mems = np.asarray(nets.prefix_memories(params, x))  # numbers, not functions of the parameters
    T = x.shape[1]
    dyn = lambda p: jnp.mean(jnp.stack([jnp.mean((nets.nets.step(p, mems[:, L], x[:, L]) - mems[:, L + 1]) ** 2)
                                        for L in range(T)]))
    g_def = jax.jit(jax.grad(lambda p: c.smt.coef_dyn * dyn(p)))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-8), g['cell'], g_def['cell'])


@pytest.mark.parametrize('mode', ['window', 'parallel'])
@pytest.mark.parametrize('dyn_grad', ['both', 'stop_target', 'rnn_only'])
def test_dynamics_gradient_option_routes_the_gradient(mode, dyn_grad):
  """Gradient of the dynamics term alone against its definition with the named stop-gradients."""
  c, nets, params, batch = _setup(mode, dynamics_gradient=dyn_grad, coef_dec=0.0, coef_unif=0.0, coef_dyn=1.0,
                                  num_transitions=0)
  x = batch['x']
  stop_in = dyn_grad == 'rnn_only'
  stop_out = dyn_grad in ('stop_target', 'rnn_only')
  sg = jax.lax.stop_gradient

  def definition(p):
    if mode == 'window':
      Tc = c.smt.context
      pairs = [(nets.nets.encode(p, x[:, :Tc]), x[:, Tc], nets.nets.encode(p, x[:, 1:Tc + 1]))]
    else:
      pm = nets.nets.prefix_memories(p, x)
      pairs = [(pm[:, L], x[:, L], pm[:, L + 1]) for L in range(x.shape[1])]
    return jnp.mean(jnp.stack([jnp.mean((nets.nets.step(p, sg(m) if stop_in else m, xi)
                                         - (sg(n) if stop_out else n)) ** 2)
                               for m, xi, n in pairs]))

  g = jax.jit(jax.grad(lambda p: smt.smt_losses(nets.nets, p, batch, jax.random.PRNGKey(0), c)[0]))(params)
  g_def = jax.jit(jax.grad(definition))(params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-7), g, g_def)
  if dyn_grad == 'rnn_only':
    assert _max_abs(g['encoder']) == 0.0  # no dynamics gradient reaches the teacher
  else:
    assert _max_abs(g['encoder']) > 0.0
  assert _max_abs(g['cell']) > 0.0


def test_deprecated_detach_target_is_translated_when_a_saved_config_is_read():
  """A saved smt.detach_target=True is smt.dynamics_gradient='stop_target' after the upgrade; the field no
  longer exists for a run to read."""
  c = tiny_config()
  saved = json.loads(c.to_json())
  saved['smt']['detach_target'] = True
  assert config_lib.upgrade(saved).smt.dynamics_gradient == 'stop_target'
  saved['smt']['detach_target'] = False
  assert config_lib.upgrade(saved).smt.dynamics_gradient == 'both'
  saved['smt'].update(detach_target=True, dynamics_gradient='rnn_only')
  with pytest.raises(config_lib.ConfigError, match='smt.detach_target'):
    config_lib.upgrade(saved)
  assert 'detach_target' not in c.smt
  c.smt.dynamics_gradient = 'sideways'
  with pytest.raises(config_lib.ConfigError, match='smt.dynamics_gradient'):
    config_lib.validate(c)


