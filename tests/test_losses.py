"""Each loss term against a direct NumPy computation, and the SMT objectives against their definitions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from smtjax import losses, models, smt
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


def test_uniformity_loss_subsamples_without_replacement():
  z = jnp.asarray(np.random.default_rng(3).normal(size=(50, 4)), jnp.float32)
  key = jax.random.PRNGKey(7)
  idx = jax.random.choice(key, 50, (12,), replace=False)
  np.testing.assert_allclose(losses.uniformity_loss(z, key, num_samples=12),
                             losses.uniformity_loss(z[idx], key, num_samples=12), rtol=1e-6)


def _setup(mode, **smt_overrides):
  c = tiny_config(mode)
  for k, v in smt_overrides.items():
    c.smt[k] = v
  nets = models.Networks.from_config(c.model)
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
  total, m = jax.jit(lambda p, b, r: smt.window_losses(nets.nets, p, b, r, s))(params, batch, rng)
  m_t, m_next = nets.encode(params, x[:, 0:Tc]), nets.encode(params, x[:, 1:Tc + 1])
  dyn = np.mean((np.asarray(nets.step(params, m_t, x[:, Tc])) - np.asarray(m_next)) ** 2)
  logits = nets.decode(params, m_t, x[:, Tc:Tc + Tf])[:, :Tf]  # the last input's prediction is unused
  dec, dec0 = losses.decoder_loss(logits, y[:, Tc - 1:Tc + Tf - 1])
  np.testing.assert_allclose(m['loss_dyn'], dyn, rtol=1e-4)
  np.testing.assert_allclose(m['loss_dec'], dec, rtol=1e-4)
  np.testing.assert_allclose(m['loss_dec0'], dec0, rtol=1e-4)
  np.testing.assert_allclose(total, dec + 0.1 * dyn + 0.001 * m['loss_unif'], rtol=1e-5)


def test_parallel_losses_equal_per_prefix_definition():
  """All transitions and all decoded memories, computed prefix by prefix with the encoder alone."""
  c, nets, params, batch = _setup('parallel', num_transitions=0, num_decoder_samples=0, future=3, gamma=0.9)
  x, y = np.asarray(batch['x']), np.asarray(batch['y'])
  B, T = x.shape
  Tf = 3
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
  _, m = jax.jit(lambda p, b, r: smt.parallel_losses(nets.nets, p, b, r, c.smt))(params, batch, jax.random.PRNGKey(0))
  np.testing.assert_allclose(m['loss_dyn'], dyn, rtol=1e-4)
  np.testing.assert_allclose(m['loss_dec'], num / den, rtol=1e-4)


def test_sampled_transitions_are_unbiased():
  c, nets, params, batch = _setup('parallel', num_transitions=0)
  full = jax.jit(lambda r: smt.parallel_losses(nets.nets, params, batch, r, c.smt)[1]['loss_dyn'])(jax.random.PRNGKey(0))
  c.smt.num_transitions = 2
  f = jax.jit(lambda r: smt.parallel_losses(nets.nets, params, batch, r, c.smt)[1]['loss_dyn'])
  draws = np.array([f(r) for r in jax.random.split(jax.random.PRNGKey(1), 400)])
  assert draws.std() > 0  # really sampled
  se = draws.std() / np.sqrt(len(draws))
  assert abs(draws.mean() - full) < 4 * se + 1e-7, (draws.mean(), full, se)


@pytest.mark.parametrize('trainable,frozen', [('rnn', 'encoder'), ('teacher', 'cell')])
def test_trainable_option_stops_gradients(trainable, frozen):
  c, nets, params, batch = _setup('parallel', trainable=trainable)
  g = jax.jit(jax.grad(lambda p: smt.parallel_losses(nets.nets, p, batch, jax.random.PRNGKey(0), c.smt)[0]))(params)
  if trainable == 'rnn':  # teacher memories are constants for the RNN's regression
    assert max(jnp.abs(v).max() for v in jax.tree.leaves(g['encoder'])) == 0.0
  assert max(jnp.abs(v).max() for v in jax.tree.leaves(g['cell'])) > 0.0
