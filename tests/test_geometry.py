"""Narrow memory tokens (model.mem_dim) and smtjax.geometry: task states, trajectories, separation."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from smtjax import models, train
from smtjax.config import ConfigError
from smtjax.studies import geometry
from tests.conftest import tiny_config


def _narrow(cell='transformer', attention='causal', mem_dim=2):
  c = tiny_config(cell=cell)
  c.model.num_mem_tokens = 1
  c.model.mem_dim = mem_dim
  c.model.encoder_attention = attention
  return c


@pytest.mark.parametrize('cell', ['transformer', 'gru', 'mlp'])
def test_narrow_memory_shapes_norm_and_prefix_memories(cell):
  c = _narrow(cell, mem_dim=3)
  nets = models.Networks.from_config(c)
  params = jax.jit(nets.init)(jax.random.PRNGKey(0))
  x = jax.random.randint(jax.random.PRNGKey(1), (2, 6), 0, 10).at[0, :2].set(-1)
  m = jax.jit(nets.encode)(params, x)
  assert m.shape == (2, 1, 3)
  np.testing.assert_allclose(np.sum(np.asarray(m) ** 2, -1), 3.0, rtol=1e-4)  # RMS-normalised token of width 3
  pm = jax.jit(nets.prefix_memories)(params, x)
  assert pm.shape == (2, 7, 1, 3)
  np.testing.assert_allclose(pm[1, 4], jax.jit(nets.encode)(params, x[1:, :4])[0], atol=2e-5)
  new = jax.jit(nets.step)(params, m, x[:, -1])
  assert new.shape == (2, 1, 3)
  np.testing.assert_allclose(np.sum(np.asarray(new) ** 2, -1), 3.0, rtol=1e-4)
  assert jax.jit(nets.readout)(params, m).shape == (2, c.model.vocab_size)
  # The projections exist only when the width differs from d_model.
  assert 'mem_out' in params['encoder'] and 'mem_in' in params['decoder']
  wide = models.Networks.from_config(tiny_config(cell=cell)).init(jax.random.PRNGKey(0))
  assert 'mem_out' not in wide['encoder'] and 'mem_in' not in wide['decoder']


def test_mem_size_and_mem_dim_validation_and_compatibility(tmp_path):
  from smtjax import config as config_lib
  c = _narrow(mem_dim=2)
  c.model.mem_size = 2
  config_lib.validate(c)
  c.model.mem_size = 16
  with pytest.raises(ConfigError, match='model.mem_size'):
    config_lib.validate(c)
  c.model.mem_size = None
  c.model.mem_dim = -1
  with pytest.raises(ConfigError, match='model.mem_dim'):
    config_lib.validate(c)
  # A workdir saved before mem_dim existed counts as mem_dim = 0; a different width is refused.
  old = json.loads(tiny_config().to_json_best_effort())
  del old['model']['mem_dim']
  (tmp_path / 'config.json').write_text(json.dumps(old))
  config_lib.check_compatible(config_lib.Run.of(tiny_config(), 1), str(tmp_path))
  with pytest.raises(ConfigError, match='model.mem_dim'):
    config_lib.check_compatible(config_lib.Run.of(_narrow(), 1), str(tmp_path))


def test_retrieval_states():
  # n = 4 symbols: MARKER 4, QUERY 5.
  x = np.array([[1, 4, 2, 0, 3, 5],
                [4, 3, 1, 1, 0, 5]])
  data = ml_collections.ConfigDict({'name': 'retrieval', 'options': {'num_symbols': 4}})
  labels, names = geometry.task_states(data, x)
  got = [[names[i] for i in row] for row in labels]
  assert got[0] == ['start', 'start', 'marker', 'hold 2', 'hold 2', 'hold 2', 'hold 2']
  assert got[1] == ['start', 'marker', 'hold 3', 'hold 3', 'hold 3', 'hold 3', 'hold 3']


def test_copy_states_form_a_tree():
  # n = 2, SEP = 2, M = 2, reversed, left-padded by one: x = [-1, s0, s1, SEP, r0]
  x = np.array([[-1, 0, 1, 2, 1],
                [-1, 1, 1, 2, 1]])
  data = ml_collections.ConfigDict({'name': 'copy', 'options': {'num_symbols': 2, 'reverse': True}})
  labels, names = geometry.task_states(data, x)
  got = [[names[i] for i in row] for row in labels]
  assert got[0] == ["''", "''", '0', '01', 'w:10', 'w:0']
  assert got[1] == ["''", "''", '1', '11', 'w:11', 'w:1']
  data.options.reverse = False
  labels, names = geometry.task_states(data, x[:1])
  assert [names[i] for i in labels[0]][-2:] == ['w:01', 'w:1']


def test_trajectories_equal_their_definitions():
  for attention in ('causal', 'bidirectional'):
    c = _narrow('gru', attention)
    nets = models.Networks.from_config(c)
    params = jax.jit(nets.init)(jax.random.PRNGKey(2))
    x = jax.random.randint(jax.random.PRNGKey(3), (3, 5), 0, 10)
    teacher = geometry.trajectories(nets, params, x, 'teacher')
    assert teacher.shape == (3, 6, 1, 2)
    encode = jax.jit(nets.encode)
    np.testing.assert_allclose(teacher[:, 0], encode(params, jnp.full((3, 1), -1)), atol=2e-5)
    for t in (1, 3, 5):
      np.testing.assert_allclose(teacher[:, t], encode(params, x[:, :t]), atol=2e-5)
    rnn = geometry.trajectories(nets, params, x, 'rnn')
    m = nets.initial_memory(params, 3)
    np.testing.assert_allclose(rnn[:, 0], m, atol=1e-6)
    for t in range(5):
      m = nets.step(params, m, x[:, t])
      np.testing.assert_allclose(rnn[:, t + 1], m, atol=2e-5)
  with pytest.raises(ValueError, match='unknown memory source'):
    geometry.trajectories(nets, params, x, 'decoder')


def test_separation_and_pca():
  rng = np.random.default_rng(0)
  centres = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
  labels = np.repeat(np.arange(3), 20)
  exact = geometry.separation(centres[labels], labels)
  assert exact['accuracy'] == 1.0 and exact['ratio'] == 0.0 and exact['num_states'] == 3
  noisy = geometry.separation(centres[labels] + 0.05 * rng.normal(size=(60, 2)), labels)
  assert noisy['accuracy'] == 1.0 and 0 < noisy['ratio'] < 0.2
  mixed = geometry.separation(rng.normal(size=(60, 2)), labels)  # labels unrelated to position
  assert mixed['accuracy'] < 0.8 and mixed['ratio'] > 0.5
  # PCA keeps a plane exactly.
  pts = rng.normal(size=(50, 2)) @ np.array([[1.0, 2.0, 0.5, 0.0], [0.0, 1.0, -1.0, 3.0]])
  pca = geometry.PCA(pts, 2)
  assert pca.explained == pytest.approx(1.0)
  back = pca(pts) @ pca.axes + pca.mean
  np.testing.assert_allclose(back, pts, atol=1e-9)


def test_geometry_workdir_after_a_tiny_run(tmp_path):
  c = _narrow('transformer')
  train.train_and_evaluate(c, str(tmp_path))
  result = geometry.geometry_workdir(str(tmp_path), num_sequences=8)
  assert result['projection'] == 'identity' and result['mem_dim'] == 2
  assert set(result['sources']) == {'teacher', 'rnn'}
  for s in result['sources'].values():
    assert 0.0 <= s['accuracy'] <= 1.0
  assert (tmp_path / 'memory_teacher.png').stat().st_size > 1000
  assert (tmp_path / 'memory_rnn.png').stat().st_size > 1000
  assert json.loads((tmp_path / 'geometry.json').read_text())['states'][:2] == ['start', 'marker']
  # A wide memory is projected by PCA.
  wide = geometry.memory_space(models.Networks.from_config(tiny_config()),
                               models.Networks.from_config(tiny_config()).init(jax.random.PRNGKey(0)),
                               tiny_config(), np.zeros((2, 8), np.int64), sources=('teacher',))
  assert wide['projection'] == 'pca' and wide['sources']['teacher']['coords'].shape == (2, 9, 2)
