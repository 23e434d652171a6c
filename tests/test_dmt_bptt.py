"""DMT and BPTT: gradient paths do what their option names say; runs, init_from, and rollouts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from smtjax import bptt, config as config_lib, dmt, models, train, variants
from smtjax.checkpoint import CheckpointError
from smtjax.metrics import read_metrics
from tests.conftest import tiny_config

B, Td = 2, 6


def _setup(cell='mlp'):
  c = tiny_config(cell=cell)
  nets = models.Networks.from_config(c.model)
  params = jax.jit(nets.init)(jax.random.PRNGKey(0))
  x = jax.random.randint(jax.random.PRNGKey(1), (B, Td), 0, 10)
  m0 = jax.jit(nets.encode)(params, x)
  return c, nets, params, x, m0


@pytest.mark.parametrize('backprop', [False, True])
def test_dmt_rollout_gradient_paths(backprop):
  """Loss at step t vs perturbations of earlier memories: zero for one-step gradients, nonzero for full."""
  c, nets, params, x, m0 = _setup()
  t = Td - 1
  probe = jnp.zeros((Td, B) + m0.shape[1:])
  g = jax.jit(jax.grad(lambda p: jnp.sum(dmt.rollout(nets, params, m0, x, backprop, p)[:, t] ** 2)))(probe)
  assert jnp.abs(g[t]).max() > 0  # a step's loss always reaches its own step
  earlier = jnp.abs(g[:t]).max()
  if backprop:
    assert earlier > 0
  else:
    assert earlier == 0.0


def test_dmt_one_step_parameter_gradient_equals_single_step_gradient():
  """With one-step gradients, step t's loss trains the cell exactly as a single step from the (fixed)
  on-policy memory m_{t-1} would."""
  c, nets, params, x, m0 = _setup()
  target = jax.random.normal(jax.random.PRNGKey(5), m0.shape)
  t = Td - 1
  loss_roll = lambda p: jnp.mean((dmt.rollout(nets, p, m0, x, False)[:, t] - target) ** 2)
  mems = jax.jit(lambda p: dmt.rollout(nets, p, m0, x, False))(params)
  loss_one = lambda p: jnp.mean((nets.step(p, mems[:, t - 1], x[:, t]) - target) ** 2)
  g_roll = jax.jit(jax.grad(loss_roll))(params)['cell']
  g_one = jax.jit(jax.grad(loss_one))(params)['cell']
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7), g_roll, g_one)
  g_full = jax.jit(jax.grad(lambda p: jnp.mean((dmt.rollout(nets, p, m0, x, True)[:, t] - target) ** 2)))(params)['cell']
  diff = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(g_full), jax.tree.leaves(g_one)))
  assert diff > 1e-6


@pytest.mark.parametrize('truncation', [0, 2])
def test_bptt_gradient_reaches_first_input_unless_truncated(truncation):
  c, nets, params, x, m0 = _setup('gru')
  c.bptt.truncation = truncation
  y = jnp.full(x.shape, -1).at[:, -1].set(3)  # a target at the last step only
  g = jax.jit(jax.grad(lambda m: bptt.bptt_losses(nets, params, {'x': x, 'y': y}, None, c, mem0=m)[0]))(m0)
  if truncation:
    assert jnp.abs(g).max() == 0.0
  else:
    assert jnp.abs(g).max() > 0


def test_bptt_rollout_equals_step_loop():
  c, nets, params, x, m0 = _setup('transformer')
  mems = jax.jit(lambda: bptt.rollout(nets, params, m0, x, truncation=2))()
  m, step = m0, jax.jit(nets.step)
  for t in range(Td):
    m = step(params, m, x[:, t])
    np.testing.assert_allclose(mems[:, t], m, atol=1e-5)


@pytest.fixture(scope='module')
def smt_workdir(tmp_path_factory):
  wd = tmp_path_factory.mktemp('smt')
  train.train_and_evaluate(tiny_config(), str(wd))
  return wd


def _dmt_config(init_from):
  c = variants.dmt(tiny_config(), context=2, rollout=6, every=3, lr=1e-3, batch_size=8, num_steps=6)
  c.log_every, c.eval_every, c.checkpoint_every = 1, 3, 3
  c.init_from = str(init_from)
  return c


def test_dmt_fine_tunes_from_smt_run(smt_workdir, tmp_path):
  c = _dmt_config(smt_workdir)
  final = train.train_and_evaluate(c, str(tmp_path))
  assert np.isfinite(final['loss_mem']) and np.isfinite(final['rnn_only_loss'])
  _, src = train.load_params(str(smt_workdir))
  _, out = train.load_params(str(tmp_path))
  jax.tree.map(np.testing.assert_array_equal, src['encoder'], out['encoder'])  # teacher frozen
  jax.tree.map(np.testing.assert_array_equal, src['decoder'], out['decoder'])
  changed = lambda a, b: any(np.abs(u - v).max() > 0 for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  assert changed(src['cell'], out['cell'])
  assert changed(src['decoder'], out['readout'])  # the readout copy is fine-tuned
  assert {'loss_mem', 'loss_readout', 'loss_dec', 'loss_unif'} <= set(read_metrics(str(tmp_path))[0])


def test_dmt_init_from_incompatible_run_is_refused(smt_workdir, tmp_path):
  c = _dmt_config(smt_workdir)
  c.model.d_model = 32
  with pytest.raises(config_lib.ConfigError, match='model.d_model'):
    train.train_and_evaluate(c, str(tmp_path / 'a'))
  c = _dmt_config(tmp_path / 'missing')
  with pytest.raises(config_lib.ConfigError, match='init_from'):
    train.train_and_evaluate(c, str(tmp_path / 'b'))
  c = _dmt_config(tmp_path)  # a directory without a checkpoint
  with pytest.raises(CheckpointError, match='no trained run'):
    train.train_and_evaluate(c, str(tmp_path / 'c'))


def test_bptt_run_learns_and_freezes_the_encoder(tmp_path):
  c = tiny_config(cell='gru')
  c.method = 'bptt'
  c.num_steps = 30
  c.optim.lr = 3e-3
  c.eval_every = c.checkpoint_every = 30
  final = train.train_and_evaluate(c, str(tmp_path))
  records = read_metrics(str(tmp_path))
  assert final['loss'] < records[0]['loss']
  assert 'rnn_only_accuracy' in final and 'teacher_loss' not in final
