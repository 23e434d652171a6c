"""The train loop: learning, resume equality, non-finite stop, config errors, compile-once."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from smtjax import config as config_lib
from smtjax import train
from smtjax.metrics import read_metrics
from tests.conftest import tiny_config


class Interrupted(Exception):
  pass


def _patch_train_step(monkeypatch, transform):
  """Wraps every Trainer's train_step with `transform(step_fn, state, batch, rng)`."""
  create = train.Trainer.create.__func__

  def patched(cls, config, devices=None):
    trainer = create(cls, config, devices)
    inner = trainer.train_step
    trainer.train_step = lambda state, batch, rng: transform(inner, state, batch, rng)
    return trainer
  monkeypatch.setattr(train.Trainer, 'create', classmethod(patched))


@pytest.mark.slow
def test_tiny_parallel_retrieval_learns_to_read_from_scratch(tmp_path):
  """Loss falls clearly, and the RNN reads whole sequences from its initial memory (issue 5)."""
  c = tiny_config('parallel')
  c.data.options.num_symbols = 4
  c.model.vocab_size = 6
  c.model.d_model = 32
  c.model.enc_depth = c.model.dec_depth = c.model.cell_depth = 2
  c.smt.num_decoder_samples = 0
  c.optim.lr = 3e-3
  c.batch_size = 32
  c.num_steps = 400
  c.log_every = 20
  c.eval_every = c.checkpoint_every = 400
  c.num_eval_batches = 2
  final = train.train_and_evaluate(c, str(tmp_path))
  records = read_metrics(str(tmp_path))
  first = np.mean([r['loss_dec'] for r in records[:3]])
  assert final['loss_dec'] < 0.3 * first, (first, final['loss_dec'])
  assert final['teacher_accuracy'] > 0.9
  assert final['rnn_only_accuracy'] > 0.9  # chance is 0.25


def test_window_mode_trains(tmp_path):
  c = tiny_config('window')
  c.num_steps = 30
  c.optim.lr = 3e-3
  c.eval_every = c.checkpoint_every = 30
  final = train.train_and_evaluate(c, str(tmp_path))
  records = read_metrics(str(tmp_path))
  assert np.isfinite(final['loss_test'])
  assert final['loss'] < records[0]['loss']


def test_resume_after_kill_equals_uninterrupted_run(tmp_path, monkeypatch):
  c = tiny_config()
  full = str(tmp_path / 'full')
  train.train_and_evaluate(c, full)

  def kill_after_6(step_fn, state, batch, rng):
    if int(state.step) == 6:
      raise Interrupted()  # killed after checkpoint 4, with metrics of steps 5-6 already written
    return step_fn(state, batch, rng)

  part = str(tmp_path / 'part')
  with monkeypatch.context() as m:
    _patch_train_step(m, kill_after_6)
    with pytest.raises(Interrupted):
      train.train_and_evaluate(c, part)
  assert max(r['step'] for r in read_metrics(part)) >= 5
  train.train_and_evaluate(c, part)  # resumes at 4

  timings = ('steps_per_s', 'tflops_per_s', 'mfu')
  strip = lambda rs: [{k: v for k, v in r.items() if k not in timings} for r in rs]
  a, b = strip(read_metrics(full)), strip(read_metrics(part))
  assert [r['step'] for r in a] == [r['step'] for r in b] == sorted({r['step'] for r in a})
  assert a == b  # metric for metric, bit for bit on one machine
  _, pa = train.load_params(full)
  _, pb = train.load_params(part)
  jax.tree.map(np.testing.assert_array_equal, pa, pb)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch, capsys):
  c = tiny_config()

  def nan_from_step_6(step_fn, state, batch, rng):
    step = int(state.step)
    state, metrics = step_fn(state, batch, rng)
    if step >= 5:  # step 6 onwards: poison parameters and loss as a blow-up would
      state = state.replace(params=jax.tree.map(lambda p: p * jnp.nan, state.params))
      metrics = dict(metrics, loss=jnp.nan)
    return state, metrics

  with monkeypatch.context() as m:
    _patch_train_step(m, nan_from_step_6)
    with pytest.raises(train.NonFiniteLossError, match='at step 6'):
      train.train_and_evaluate(c, str(tmp_path))
  _, params = train.load_params(str(tmp_path))
  assert all(np.isfinite(p).all() for p in jax.tree.leaves(params))
  assert train.Trainer.create  # unpatched again
  final = train.train_and_evaluate(c, str(tmp_path))  # resumes from step 4 and finishes
  assert 'Resumed' in capsys.readouterr().out
  assert np.isfinite(final['loss'])


def test_train_step_compiles_once(tmp_path):
  c = tiny_config()
  trainer = train.Trainer.create(c, max_traces=1)
  state = trainer.init_state(jax.random.PRNGKey(0))
  from smtjax.data import make_source
  from smtjax.data.pipeline import BatchIterator
  from smtjax.sharding import global_batch
  it = BatchIterator(make_source(c.data, 0), 'train', c.batch_size)
  for _ in range(3):
    state, _ = trainer.train_step(state, global_batch(next(it), trainer.batch_sharding), jax.random.PRNGKey(0))
  assert trainer.train_step._cache_size() == 1
  assert int(state.step) == 3
  # The guard is real: a batch of another shape would compile a second program.
  odd = {k: v[:, :-1] for k, v in global_batch(next(it), trainer.batch_sharding).items()}
  with pytest.raises(AssertionError):
    trainer.train_step(state, odd, jax.random.PRNGKey(0))


@pytest.mark.parametrize('trainable,frozen,trained', [('teacher', 'cell', 'encoder'), ('rnn', 'decoder', 'cell')])
def test_frozen_networks_do_not_change(tmp_path, trainable, frozen, trained):
  c = tiny_config()
  c.smt.trainable = trainable
  c.num_steps = 3
  trainer = train.Trainer.create(c)
  s0 = trainer.init_state(jax.random.PRNGKey(0))
  before = jax.device_get(s0.params)
  from smtjax.data import make_source
  from smtjax.data.pipeline import BatchIterator
  from smtjax.sharding import global_batch
  it = BatchIterator(make_source(c.data, 0), 'train', c.batch_size)
  s = s0
  for _ in range(3):
    s, _ = trainer.train_step(s, global_batch(next(it), trainer.batch_sharding), jax.random.PRNGKey(0))
  after = jax.device_get(s.params)
  jax.tree.map(np.testing.assert_array_equal, before[frozen], after[frozen])
  assert any(np.abs(a - b).max() > 0 for a, b in zip(jax.tree.leaves(before[trained]), jax.tree.leaves(after[trained])))


def test_learning_rate_schedules():
  c = tiny_config()
  c.num_steps = 1000
  c.optim.warmup_frac = 0.1
  c.optim.lr = 2.0
  sched = train.learning_rate_schedule(c.optim, c.num_steps)
  np.testing.assert_allclose([sched(0), sched(50), sched(100), sched(999)], [0.0, 1.0, 2.0, 2.0], atol=1e-6)
  c.optim.schedule = 'cosine'
  sched = train.learning_rate_schedule(c.optim, c.num_steps)
  np.testing.assert_allclose([sched(50), sched(100), sched(550), sched(1000)], [1.0, 2.0, 1.0, 0.0], atol=1e-5)


def _set(c, field, value):
  node = c
  *path, last = field.split('.')
  for p in path:
    node = node[p]
  node[last] = value


@pytest.mark.parametrize('field,value,named', [
    ('model.mem_size', 100, 'model.mem_size'),
    ('smt.context', 6, 'smt.context'),  # window mode: context + future > seq_len
    ('data.name', 'nope', 'data.name'),
    ('model.cell', 'lstm9', 'model.cell'),
    ('model.vocab_size', 5, 'model.vocab_size'),
    ('optim.lr', 0.0, 'optim.lr'),
    ('optim.lr', -1e-3, 'optim.lr'),
    ('batch_size', 0, 'batch_size'),
    ('smt.mode', 'sideways', 'smt.mode'),
])
def test_config_errors_name_the_field_before_anything_runs(tmp_path, field, value, named):
  c = tiny_config('window' if field == 'smt.context' else 'parallel')
  _set(c, field, value)
  workdir = tmp_path / 'run'
  from smtjax.data import DataError
  with pytest.raises((config_lib.ConfigError, DataError), match=named.replace('.', r'\.')):
    train.train_and_evaluate(c, str(workdir))
  assert not workdir.exists()  # nothing written, nothing compiled


def test_batch_not_divisible_by_devices():
  c = tiny_config()
  c.batch_size = 12
  with pytest.raises(config_lib.ConfigError, match='batch_size'):
    config_lib.validate(c, num_devices=8)


def test_resume_with_different_architecture_is_refused(tmp_path):
  c = tiny_config()
  c.num_steps = 4
  train.train_and_evaluate(c, str(tmp_path))
  c.model.d_model = 32
  with pytest.raises(config_lib.ConfigError, match='model.d_model'):
    train.train_and_evaluate(c, str(tmp_path))
  assert json.load(open(tmp_path / 'config.json'))['model']['d_model'] == 16  # saved config untouched
