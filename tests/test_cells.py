"""Recurrent cells: every built-in cell steps a memory (padding keeps it), the linear cells' parallel scan
equals their step-by-step rollout in values and gradients, BPTT trains them by the scan, and a cell a user
registers (outside smtjax/) trains with SMT, DMT and BPTT and is evaluated and sampled like the built-ins."""

import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from smtjax import bptt, inference, layers, models, registry, train, variants
from smtjax import config as config_lib
from smtjax.config import ModelConfig
from smtjax.errors import ConfigError
from tests.conftest import seed_calibration, tiny_config

B, T = 3, 9


def _setup(cell, **model):
  c = tiny_config(cell=cell)
  for k, v in model.items():
    c.model[k] = v
  nets = models.Networks.from_config(c)
  params = jax.jit(nets.init)(jax.random.PRNGKey(0))
  x = jax.random.randint(jax.random.PRNGKey(1), (B, T), 0, 10).at[1, 3].set(-1).at[2, :2].set(-1)
  mem0 = jax.random.normal(jax.random.PRNGKey(2), (B, c.model.num_mem_tokens, c.model.d_model))
  return c, nets, params, x, mem0


@pytest.mark.parametrize('cell', registry.BUILT_IN_CELLS)
def test_every_built_in_cell_steps_a_memory(cell):
  c, nets, params, x, mem0 = _setup(cell)
  new = jax.jit(nets.step)(params, mem0, x[:, 5])  # no padding at step 5
  assert new.shape == mem0.shape and bool(jnp.all(jnp.isfinite(new)))
  assert float(jnp.abs(new - mem0).max()) > 1e-4
  np.testing.assert_array_equal(jax.jit(nets.step)(params, mem0, jnp.full((B,), -1)), mem0)  # padding keeps it
  if cell not in registry.LINEAR_BUILT_INS:  # nonlinear cells put memory tokens on the RMS-1 shell
    np.testing.assert_allclose(jnp.sqrt(jnp.mean(new ** 2, -1)), 1.0, atol=2e-3)
  assert registry.is_linear(registry.cell_class(cell)) == (cell in registry.LINEAR_BUILT_INS)


@pytest.mark.parametrize('cell', registry.LINEAR_BUILT_INS)
def test_parallel_scan_equals_the_sequential_rollout(cell):
  """Values and gradients (cell parameters and initial memory), with padding inside and before the tokens."""
  c, nets, params, x, mem0 = _setup(cell)
  w = jax.random.normal(jax.random.PRNGKey(3), (B, T) + mem0.shape[1:])
  loss = lambda roll: lambda p, m: jnp.sum(roll(p, m, x) * w)
  seq = jax.jit(jax.value_and_grad(loss(nets.rollout), argnums=(0, 1)))(params, mem0)
  parallel = functools.partial(nets.rollout, parallel=True)  # Networks.scan_rollout
  par = jax.jit(jax.value_and_grad(loss(parallel), argnums=(0, 1)))(params, mem0)
  np.testing.assert_allclose(par[0], seq[0], atol=1e-4)  # a sum of ~200 products of unit size
  np.testing.assert_allclose(jax.jit(nets.scan_rollout)(params, mem0, x), jax.jit(nets.rollout)(params, mem0, x),
                             atol=1e-5, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(par[1]), jax.tree.leaves(seq[1])):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)
  with pytest.raises(ValueError, match='parallel rollout keeps the full gradient'):
    nets.rollout(params, mem0, x, truncation=2, parallel=True)


@pytest.mark.parametrize('cell', registry.LINEAR_BUILT_INS)
def test_bptt_by_parallel_scan_equals_bptt_by_lax_scan(cell):
  c, nets, params, x, _ = _setup(cell)
  c.method = 'bptt'
  nets = models.Networks.from_config(c)
  params = jax.jit(nets.init)(jax.random.PRNGKey(0))
  batch = {'x': x, 'y': jnp.roll(x, -1, axis=1)}
  out = {}
  for scan in (False, True):
    c.bptt.parallel_scan = scan
    config_lib.validate(c)
    out[scan] = jax.jit(jax.value_and_grad(lambda p: bptt.bptt_losses(nets, p, batch, None, c)[0]))(params)
  np.testing.assert_allclose(out[True][0], out[False][0], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(out[True][1]), jax.tree.leaves(out[False][1])):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-4)


def test_parallel_scan_is_validated():
  c = tiny_config(cell='gru')
  c.method, c.bptt.parallel_scan = 'bptt', True
  with pytest.raises(ConfigError, match='bptt.parallel_scan: needs a linear cell'):
    config_lib.validate(c)
  assert {'mingru', 'lru'} <= set(registry.linear_cells()) and 'gru' not in registry.linear_cells()
  c.model.cell, c.bptt.truncation = 'lru', 4
  with pytest.raises(ConfigError, match='bptt.truncation=0'):
    config_lib.validate(c)
  c.model.cell = 'no_such_cell'
  with pytest.raises(ConfigError, match="config.model.cell: unknown value 'no_such_cell'"):
    config_lib.validate(c)


def test_lru_eigenvalues_follow_the_options():
  c, nets, params, _, _ = _setup('lru', cell_options={'r_min': 0.8, 'r_max': 0.9})
  lam = np.abs(np.exp(-np.exp(np.asarray(params['cell']['nu_log']))))
  assert lam.min() >= 0.8 - 1e-6 and lam.max() <= 0.9 + 1e-6


# A user's cell, registered outside smtjax/ (the 20-line example of docs/configs.md).
@registry.register_cell('test_tanh_rnn')
class TanhRNN(nn.Module):
  """m' = rms_norm(tanh(W [m, embed(x)])) over the flattened memory."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, mem_BxKxD, x_B):
    B, K, D = mem_BxKxD.shape
    e = layers.token_embedding(self.cfg)(jnp.maximum(x_B, 0))
    h = jnp.concatenate([mem_BxKxD.reshape(B, K * D), e], axis=-1)
    h = jnp.tanh(nn.Dense(K * D, name='w')(h))
    return layers.rms_norm(h.reshape(B, K, D))


def test_a_registered_cell_trains_with_smt_dmt_and_bptt_and_is_used_everywhere(tmp_path):
  c = tiny_config(cell='test_tanh_rnn')
  c.num_steps = c.eval_every = c.checkpoint_every = 2
  final = train.train_and_evaluate(c, str(tmp_path / 'smt'))
  assert np.isfinite(final['rnn_only_loss'])
  d = variants.dmt(c.copy_and_resolve_references(), context=2, rollout=6, every=3, lr=1e-3, batch_size=8, num_steps=2)
  d.eval_every = d.checkpoint_every = 2
  d.init_from = str(tmp_path / 'smt')
  assert np.isfinite(train.train_and_evaluate(d, str(tmp_path / 'dmt'))['loss_mem'])
  b = c.copy_and_resolve_references()
  b.method = 'bptt'
  assert np.isfinite(train.train_and_evaluate(b, str(tmp_path / 'bptt'))['loss'])
  config, params = train.load_params(str(tmp_path / 'smt'))
  nets = models.Networks.from_config(config)
  toks = inference.rnn_generate(nets, params, 2, 5, 1.0, jax.random.PRNGKey(0))
  assert toks.shape == (2, 5)
  with pytest.raises(ConfigError, match='already registered'):
    registry.register_cell('test_tanh_rnn')(type('Other', (nn.Module,), {}))


def test_a_user_cell_never_replaces_a_built_in_one():
  """Even a class with the built-in's own name, defined in __main__ (a script or notebook), is refused."""
  from smtjax import cells
  impostor = type('GRU', (nn.Module,), {'__module__': '__main__', '__qualname__': 'GRU'})
  with pytest.raises(ConfigError, match="cell 'gru' is built in .*register __main__.GRU under another name"):
    registry.register_cell('gru')(impostor)
  assert registry.cell_class('gru') is cells.GRUCell


@pytest.mark.slow
def test_linear_rnn_comparison_runs_end_to_end(tmp_path):
  """The comparison at a tiny size on one task: every method trains at equal wall clock and is scored at T,
  2T and 4T; the table and the figure are written. Step times come from a written calibration (0.1 s per step:
  10 steps in the 1 s budget) rather than a timing run per method, and no drift-robust setting is tuned (the
  real-data and crossover studies' tests tune)."""
  from smtjax.studies import linear_rnns
  c = tiny_config()
  c.num_eval_batches = 1
  plan = linear_rnns.Plan(budget_s=1.0, seeds=(0,), drift_grid=(), evals_per_run=2, num_eval_batches=1,
                          test_multiples=(2, 4), lanes=0)  # every run in this process
  seed_calibration(tmp_path / 'retrieval', linear_rnns.METHODS, plan, seconds=0.1)
  summaries = linear_rnns.run_comparison({'retrieval': c}, plan, tmp_path)
  r = summaries['retrieval']['results']
  assert set(r) == {'teacher', *(m.name for m in linear_rnns.METHODS)}
  for col, cell in r.items():
    for k in ('accuracy', 'accuracy_x2', 'accuracy_x4'):
      assert 0.0 <= cell[k]['mean'] <= 1.0, (col, k)
  runs = summaries['retrieval']['runs']
  assert runs['scan_lru']['steps'] == runs['bptt_lstm']['steps'] == 10 and runs['smt_dmt']['steps'] == '7 SMT + 2 DMT'
  saved = json.loads((tmp_path / 'retrieval' / 'seed0' / 'scan_mingru' / 'config.json').read_text())
  assert (saved['model']['cell'], saved['bptt']['parallel_scan'], saved['method']) == ('mingru', True, 'bptt')
  text = (tmp_path / 'linear_rnns.md').read_text()
  assert all(m.label in text for m in linear_rnns.METHODS)
  assert (tmp_path / 'linear_rnns.png').stat().st_size > 1000


def _sigmoid(a):
  return 1.0 / (1.0 + np.exp(-a))


def test_mingru_step_is_the_published_equations():
  """Feng et al. 2024, minGRU: z = sigmoid(Linear(x)), h~ = Linear(x), h_t = (1 - z) * h_{t-1} + z * h~, in
  NumPy from the parameters (the scan-vs-rollout tests would pass a wrong formula used by both)."""
  c, nets, params, x, mem0 = _setup('mingru')
  p = jax.tree.map(np.asarray, params['cell'])
  e = p['embed']['embedding'][np.asarray(x[:, 5])]
  z = _sigmoid(e @ p['gate']['kernel'] + p['gate']['bias'])
  h_tilde = e @ p['candidate']['kernel'] + p['candidate']['bias']
  h = np.asarray(mem0).reshape(B, -1)
  want = ((1 - z) * h + z * h_tilde).reshape(mem0.shape)
  np.testing.assert_allclose(jax.jit(nets.step)(params, mem0, x[:, 5]), want, rtol=1e-5, atol=1e-5)


def test_lru_step_is_the_published_equations():
  """Orvieto et al. 2023, LRU: lambda = exp(-exp(nu) + i exp(theta)), gamma = sqrt(1 - |lambda|^2) (tied to
  lambda here, see LRUCell), s_t = lambda * s_{t-1} + gamma * (B_re + i B_im) u_t, in NumPy complex128."""
  c, nets, params, x, mem0 = _setup('lru')
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params['cell'])
  lam = np.exp(-np.exp(p['nu_log']) + 1j * np.exp(p['theta_log']))
  gamma = np.sqrt(1 - np.abs(lam) ** 2)
  u = p['embed']['embedding'][np.asarray(x[:, 5])]
  flat = np.asarray(mem0, np.float64).reshape(B, -1)
  N = flat.shape[1] // 2
  s = flat[:, :N] + 1j * flat[:, N:]
  new = lam * s + gamma * (u @ (p['b_re'] + 1j * p['b_im']))
  want = np.concatenate([new.real, new.imag], axis=-1).reshape(mem0.shape)
  assert np.all(np.abs(lam) < 1)  # stable by construction
  np.testing.assert_allclose(jax.jit(nets.step)(params, mem0, x[:, 5]), want, rtol=1e-5, atol=1e-5)
