"""The plain-Transformer reference (config.method='transformer') and the training-recipe study."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from smtjax import config as config_lib
from smtjax import runs, train
from smtjax.errors import ConfigError
from smtjax.metrics import read_metrics
from smtjax.models import Networks
from smtjax.objectives import objective
from smtjax.studies import claims, recipe
from tests.conftest import tiny_config


def _reference_config():
  c = tiny_config('parallel')
  c.method = 'transformer'
  return c


def test_reference_is_causal_and_has_the_teachers_total_depth():
  """Logits at t depend on x_0..x_t only: changing x[t+1:] leaves them unchanged, changing x[t] does not."""
  c = _reference_config()
  nets = Networks.from_config(c)
  params = nets.init_reference(jax.random.PRNGKey(0))
  assert set(params) == {'transformer'}
  blocks = [k for k in params['transformer'] if k.startswith('block_')]
  assert len(blocks) == c.model.enc_depth + c.model.dec_depth
  x = jax.random.randint(jax.random.PRNGKey(1), (2, c.data.seq_len), 0, c.model.vocab_size)
  t = c.data.seq_len // 2
  later = x.at[:, t + 1:].set((x[:, t + 1:] + 1) % c.model.vocab_size)
  now = x.at[:, t].set((x[:, t] + 1) % c.model.vocab_size)
  base = nets.reference_logits(params, x)
  np.testing.assert_allclose(nets.reference_logits(params, later)[:, :t + 1], base[:, :t + 1], atol=1e-6)
  assert not np.allclose(nets.reference_logits(params, now)[:, t], base[:, t], atol=1e-4)


def test_reference_loss_is_the_mean_cross_entropy_over_targets():
  c = _reference_config()
  nets = Networks.from_config(c)
  params = nets.init_reference(jax.random.PRNGKey(0))
  x = jax.random.randint(jax.random.PRNGKey(1), (3, c.data.seq_len), 0, c.model.vocab_size)
  y = jnp.full_like(x, -1).at[:, -1].set(x[:, 0])  # one target per sequence
  loss, metrics = objective(c)(nets, params, {'x': x, 'y': y}, None, c)
  logp = jax.nn.log_softmax(nets.reference_logits(params, x)[:, -1])
  np.testing.assert_allclose(loss, -jnp.mean(jnp.take_along_axis(logp, x[:, :1], axis=1)), rtol=1e-5)
  assert set(metrics) == {'loss', 'accuracy'}


def test_reference_trains_and_is_scored_as_transformer(tmp_path):
  c = _reference_config()
  c.num_steps, c.eval_every, c.checkpoint_every, c.optim.lr = 30, 30, 30, 3e-3
  final = train.train_and_evaluate(c, str(tmp_path))
  assert 'transformer_accuracy' in final and 'rnn_only_accuracy' not in final and 'teacher_accuracy' not in final
  records = read_metrics(str(tmp_path))
  assert records[-1]['loss'] < records[0]['loss']
  _, params = train.load_params(str(tmp_path))
  assert set(params) == {'transformer'}
  with pytest.raises(ConfigError, match='plain-Transformer reference'):
    runs.evaluate_workdir(str(tmp_path))


def test_recipe_arms_parse_and_are_validated_before_training(tmp_path):
  arm = recipe.parse_arm('dec4:smt.num_decoder_samples=4, optim.lr=1e-3')
  assert arm == recipe.Arm('dec4', (('smt.num_decoder_samples', 4), ('optim.lr', 1e-3)))
  assert recipe.parse_arm('base') == recipe.Arm('base')
  c = tiny_config('parallel')
  jobs = recipe.plan_jobs(c, [arm, recipe.Arm('ref', (('method', 'transformer'),))], [0, 1], 40, 4, tmp_path)
  (dec4,), (ref,) = jobs[('dec4', 1)], jobs[('ref', 0)]
  assert dec4.config.seed == 1 and dec4.config.smt.num_decoder_samples == 4
  assert ref.config.eval_split == 'valid' and ref.config.eval_every == 10
  with pytest.raises(ConfigError):
    recipe.plan_jobs(c, [recipe.parse_arm('bad:smt.num_decoder_samples=-1')], [0], 40, 4, tmp_path)
  with pytest.raises(ConfigError, match='unique'):
    recipe.plan_jobs(c, [arm, arm], [0], 40, 4, tmp_path)
  with pytest.raises(ConfigError, match='field=value'):
    recipe.parse_arm('x:smt.coef_unif')
  with pytest.raises(ConfigError, match='short_len'):  # a curriculum's short length must be shorter than T
    recipe.plan_jobs(c, [recipe.parse_arm('cur:short_len=8,short_steps=10')], [0], 40, 4, tmp_path)
  assert not any(p.exists() for p in tmp_path.iterdir())  # nothing trained


def test_recipe_curve_measures():
  steps, acc = [100, 200, 300, 400], [0.2, 0.9, 0.95, 1.0]
  assert recipe.steps_to_fraction(steps, acc, 0.95) == 300  # 0.95 * 1.0 first reached at step 300
  assert recipe.last_quarter_swing([100, 200, 300, 400], [0.1, 1.0, 0.4, 0.9]) == pytest.approx(0.5)
  assert recipe.accuracy_key(tiny_config('parallel')) == 'teacher_accuracy'
  assert recipe.accuracy_key(tiny_config('window')) == 'rnn_only_accuracy'  # no prefix memories to score
  assert recipe.accuracy_key(_reference_config()) == 'transformer_accuracy'


def test_recipe_study_trains_every_arm_and_seed(tmp_path):
  c = tiny_config('parallel')
  arms = [recipe.Arm('smt'), recipe.Arm('transformer', (('method', 'transformer'),))]
  summary = recipe.run_study(c, arms, [0], steps=8, evals=2, out=tmp_path, lanes=0, title='tiny')
  assert set(summary) == {'smt', 'transformer'}
  assert summary['smt']['runs'][0]['steps'] == [4, 8] and np.isfinite(summary['smt']['rnn_final']['mean'])
  assert np.isnan(summary['transformer']['rnn_final']['mean'])  # the reference has no RNN
  run = summary['smt']['runs'][0]  # the plateau is judged as the claims study judges it
  assert run['change'] == claims.last_quarter_change({'steps': run['steps'], 'values': run['accuracy']})
  assert (tmp_path / 'recipe.md').read_text().count('| transformer |') == 1 and (tmp_path / 'recipe.png').exists()
  assert config_lib.load_saved(tmp_path / 'transformer' / 'seed0').method == 'transformer'


def test_recipe_curriculum_trains_short_then_full_length_from_its_parameters(tmp_path):
  """A curriculum arm: a run at the short length, then the full length initialised from it; judged on the
  full-length evaluations at the total step count, equal in steps to the other arms."""
  c = tiny_config('parallel')
  arm = recipe.parse_arm('cur:short_len=4,short_steps=4,optim.lr=1e-3')
  assert arm == recipe.Arm('cur', (('optim.lr', 1e-3),), short_len=4, short_steps=4)
  (first, full), = recipe.plan_jobs(c, [arm], [0], 12, 3, tmp_path).values()
  assert (first.config.data.seq_len, first.config.smt.future, first.config.num_steps) == (4, 4, 4)
  assert (full.config.data.seq_len, full.config.num_steps, full.config.init_from) == (8, 8, str(first.workdir))
  assert full.after == (first.workdir,) and full.config.optim.lr == first.config.optim.lr == 1e-3
  summary = recipe.run_study(c, [arm], [0], steps=12, evals=3, out=tmp_path, lanes=0, title='tiny')
  run = summary['cur']['runs'][0]
  assert run['steps'] == [8, 12]  # the full-length stage's evaluations (every 4 of its 8 steps), after 4 short steps
  full_evals = [r['step'] for r in read_metrics(full.workdir) if 'teacher_accuracy' in r]
  assert full_evals == [4, 8]
  _, short_params = train.load_params(str(first.workdir))  # the full stage starts from the short stage's end
  start = train.initial_params(train.Trainer.from_config(full.config))
  jax.tree.map(np.testing.assert_array_equal, start, short_params)
