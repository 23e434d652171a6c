"""smtjax.analysis: gradient-vs-distance and drift analyses differentiate and measure what they say."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from smtjax import inference, models, train
from smtjax.studies import analysis
from tests.conftest import tiny_config

B, T = 4, 8


@pytest.fixture(scope='module')
def setup():
  c = tiny_config(cell='gru')
  nets = models.Networks.from_config(c)
  params = jax.jit(nets.init)(jax.random.PRNGKey(0))
  x = jax.random.randint(jax.random.PRNGKey(1), (B, T), 0, 10)
  y = jnp.full((B, T), -1).at[:, -1].set(jnp.arange(B) % 5).at[0, -1].set(-1)  # last target; one missing
  return nets, params, x, y


def test_bptt_gradients_reach_every_distance_and_match_direct_grad(setup):
  nets, params, x, y = setup
  g = jax.device_get(analysis.bptt_embedding_gradients(nets, params, x, y, chunk=2))
  for k in ('embedding', 'memory'):
    assert g[k].shape == (T,) and np.all(np.isfinite(g[k]))
    assert np.all(g[k] > 0)  # untruncated rollout: every input reaches the target
  assert np.all(g['per_example_embedding'][1:] > 0)
  # Direct check of one example and position: the gradient w.r.t. the cell's embedding row of x_t, when
  # the table is perturbed at step t only, equals the per-step perturbation gradient.
  b, t = 2, 3
  table = params['cell']['embed']['embedding']
  mem0 = nets.initial_memory(params, B)[b:b + 1]

  def loss(delta):
    m = mem0
    for s in range(T):  # a Python loop on purpose: an independent computation
      p = analysis._with_cell_embedding(params, table + (delta if s == t else 0.0))
      m = nets.step(p, m, x[b:b + 1, s])
    return analysis._ce(nets.readout(params, m), y[b:b + 1, -1])[0]

  direct = jax.jit(jax.grad(loss))(jnp.zeros_like(table))[x[b, t]]
  np.testing.assert_allclose(g['per_example_embedding'][b, t], np.linalg.norm(direct), rtol=1e-4)
  # The per-distance mean leaves out the example without a target and reverses the index.
  np.testing.assert_allclose(g['embedding'], g['per_example_embedding'][1:].mean(0)[::-1], rtol=1e-5)


def test_smt_gradients_are_causal_and_match_direct_grad(setup):
  nets, params, x, y = setup
  L = 5
  y = y.at[:, L - 1].set(jnp.arange(B) % 3)
  g = jax.device_get(analysis.smt_embedding_gradients(nets, params, x, y, L=L))
  per = g['per_example_embedding']
  assert per.shape == (B, T) and np.all(np.isfinite(per))
  assert np.all(per[:, L:] == 0.0)  # the prefix memory E(x[:L]) cannot see tokens t >= L
  assert np.all(per[:, :L] > 0)
  # Direct: the ordinary (whole-window) encoder call on x[:, :L] with the same embeddings.
  emb = analysis.encoder_token_embeddings(nets, params, x)

  def loss(e):
    mem = nets.encoder.apply({'params': params['encoder']}, x[:, :L], tok_emb=e[:, :L])
    return jnp.sum(analysis._ce(inference.teacher_logits(nets, params, mem), y[:, L - 1]))

  direct = np.linalg.norm(jax.jit(jax.grad(loss))(emb), axis=-1)
  np.testing.assert_allclose(per, direct, rtol=1e-3, atol=1e-7)
  full = jax.device_get(analysis.smt_embedding_gradients(nets, params, x, y))
  assert full['embedding'].shape == (T,) and np.all(full['embedding'] > 0)


def test_drift_matches_direct_steps(setup):
  nets, params, x, _ = setup
  R, N = 3, 5
  d = jax.device_get(analysis.drift(nets, params, x, R, N))
  assert d['one_step_mse'].shape == d['rollout_mse'].shape == (N,)
  np.testing.assert_allclose(d['rollout_mse'][0], d['one_step_mse'][0], rtol=1e-5)
  n = 3
  enc = jax.jit(nets.encode)
  pred = jax.jit(nets.step)(params, enc(params, x[:, :R + n - 1]), x[:, R + n - 1])
  want = jnp.mean((pred - enc(params, x[:, :R + n])) ** 2)
  np.testing.assert_allclose(d['one_step_mse'][n - 1], want, rtol=1e-3)
  assert np.all(np.isfinite(d['rollout_mse']))


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  wd = tmp_path_factory.mktemp('analysis')
  c = tiny_config()
  c.num_steps = c.eval_every = c.checkpoint_every = 2
  train.train_and_evaluate(c, str(wd))
  return wd


def test_workdir_studies_write_files(workdir, tmp_path):
  r = analysis.gradients_workdir(str(workdir), num_batches=1)
  run = r['runs'][str(workdir)]
  assert len(run['bptt_embedding']) == T and len(run['smt_embedding']) == T
  assert json.loads((workdir / 'gradients.json').read_text())['runs']
  assert (workdir / 'gradients.png').stat().st_size > 0
  d = analysis.drift_workdir(str(workdir), compare_workdir=str(workdir), out=str(tmp_path), read_len=4)
  run = d['runs'][str(workdir)]
  assert run['n'] == [1, 2, 3, 4] and len(run['rollout_mse']) == 4
  assert (tmp_path / 'drift.png').stat().st_size > 0 and (tmp_path / 'drift.json').exists()
