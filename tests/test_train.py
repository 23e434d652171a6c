"""The train loop: learning, resume equality, non-finite stop, config errors, compile-once."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from smtjax import config as config_lib
from smtjax import metrics as metrics_lib
from smtjax import models, optim, train, variants
from smtjax.metrics import read_metrics
from tests.conftest import ROOT, tiny_config


class Interrupted(Exception):
  pass


LEARN = textwrap.dedent('''
    import json, sys
    import numpy as np
    sys.path.insert(0, '.')
    from tests.conftest import tiny_config
    from smtjax import train
    from smtjax.metrics import read_metrics
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
    final = train.train_and_evaluate(c, sys.argv[1])
    first = float(np.mean([r['loss_dec'] for r in read_metrics(sys.argv[1])[:3]]))
    print('RESULT', json.dumps(dict(first=first, **{k: float(final[k]) for k in
                                    ('loss_dec', 'teacher_accuracy', 'rnn_only_accuracy')})))
''')


@pytest.mark.slow
def test_tiny_parallel_retrieval_learns_to_read_from_scratch(tmp_path):
  """Loss falls clearly, and the RNN reads whole sequences from its initial memory. 400 steps:
  run in a process with XLA's default optimisation (the suite compiles at -O0, which runs 1.7x slower)."""
  env = {**os.environ, 'XLA_FLAGS': '', 'SMTJAX_TEST_XLA_FLAGS': ''}
  r = subprocess.run([sys.executable, '-c', LEARN, str(tmp_path)], cwd=ROOT, env=env, capture_output=True,
                     text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  res = json.loads(r.stdout.split('RESULT ', 1)[1])
  assert res['loss_dec'] < 0.3 * res['first'], res
  assert res['teacher_accuracy'] > 0.9, res
  assert res['rnn_only_accuracy'] > 0.9, res  # chance is 0.25


def test_window_mode_trains(tmp_path):
  c = tiny_config('window')
  c.num_steps = 30
  c.optim.lr = 3e-3
  c.eval_every = c.checkpoint_every = 30
  final = train.train_and_evaluate(c, str(tmp_path))
  records = read_metrics(str(tmp_path))
  assert np.isfinite(final['loss_test'])
  assert final['loss'] < records[0]['loss']


def test_resume_after_kill_equals_uninterrupted_run(tmp_path):
  c = tiny_config()
  full = str(tmp_path / 'full')
  train.train_and_evaluate(c, full)

  def kill_after_6(step, state):
    if step == 6:
      raise Interrupted()  # killed after checkpoint 4, with metrics of step 5 already written

  part = str(tmp_path / 'part')
  with pytest.raises(Interrupted):
    train.train_and_evaluate(c, part, hooks=[kill_after_6])
  assert max(r['step'] for r in read_metrics(part)) >= 5
  train.train_and_evaluate(c, part)  # resumes at 4

  strip = metrics_lib.without_timings
  a, b = strip(read_metrics(full)), strip(read_metrics(part))
  assert [r['step'] for r in a] == [r['step'] for r in b] == sorted({r['step'] for r in a})
  assert a == b  # metric for metric, bit for bit on one machine
  _, pa = train.load_params(full)
  _, pb = train.load_params(part)
  jax.tree.map(np.testing.assert_array_equal, pa, pb)


def test_hooks_run_on_their_own_schedules_and_see_metrics_in_step_order(tmp_path):
  c = tiny_config()
  c.log_every = 3  # log, evaluate (every 4) and checkpoint (every 4) fall on different steps
  seen = {'metrics': [], 'state': [], 'saved_before': []}

  def on_metrics(step, metrics):
    seen['metrics'].append((step, float(metrics['loss'])))

  def on_state(step, state):
    seen['state'].append((step, int(state.step)))
    seen['saved_before'].append(max((r['step'] for r in read_metrics(str(tmp_path))), default=0))

  c.metrics_flush_secs = 0.0
  final = train.train_and_evaluate(c, str(tmp_path), hooks=[
      train.Hook('every 2 on the host', lambda s: s % 2 == 0, on_metrics, at='metrics'),
      train.Hook('every 3, after the metrics', lambda s: s % 3 == 0, on_state, sync=True)])
  assert [s for s, _ in seen['metrics']] == [2, 4, 6, 8]  # one step behind the device, yet every one, in order
  records = {r['step']: r for r in read_metrics(str(tmp_path))}
  assert [s for s in records if 'loss' in records[s]] == [3, 6, 8]  # the log hook's own schedule (and the last)
  assert [s for s in records if 'loss_test' in records[s]] == [4, 8]  # evaluations on theirs
  for step, loss in seen['metrics']:
    if 'loss' in records.get(step, {}):
      assert loss == pytest.approx(records[step]['loss'])
  assert seen['state'] == [(3, 3), (6, 6)]  # the state after that step
  assert seen['saved_before'][0] >= 3  # a sync hook runs after the metrics of its own step are written
  assert np.isfinite(final['loss_test'])


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch, caplog):
  c = tiny_config()
  step_fn = train.train_step

  def nan_from_step_6(state, batch, rng, **kwargs):
    blown = state.step >= 5  # step 6 onwards: poison parameters and loss as a blow-up would
    state, metrics = step_fn(state, batch, rng, **kwargs)
    poison = lambda a: jnp.where(blown, a * jnp.nan, a)
    return state.replace(params=jax.tree.map(poison, state.params)), dict(metrics, loss=poison(metrics['loss']))

  with monkeypatch.context() as m:
    m.setattr(train, 'train_step', nan_from_step_6)  # the pure step that Trainer.create compiles
    with pytest.raises(train.NonFiniteLossError, match=r'at step 6; the last good checkpoint \(step 4\)'):
      train.train_and_evaluate(c, str(tmp_path))
    early = c.copy_and_resolve_references()
    early.checkpoint_every = early.eval_every = 8  # the blow-up comes before the first save
    with pytest.raises(train.NonFiniteLossError, match='at step 6; nothing was saved yet'):
      train.train_and_evaluate(early, str(tmp_path / 'early'))
  _, params = train.load_params(str(tmp_path))
  assert all(np.isfinite(p).all() for p in jax.tree.leaves(params))
  assert train.train_step is step_fn  # restored: the resumed run below is a real one
  monkeypatch.setenv('SMTJAX_ATTENTION', 'xla')  # changes the compiled program: the workdir records it
  with caplog.at_level('INFO', logger='absl'):
    final = train.train_and_evaluate(c, str(tmp_path))  # resumes from step 4 and finishes
  assert any('Resumed' in r.getMessage() and 'step 4' in r.getMessage() for r in caplog.records)
  assert np.isfinite(final['loss'])
  starts = json.loads((tmp_path / 'environment.json').read_text())
  assert [e['start_step'] for e in starts] == [0, 4] and starts[0]['platform'] == 'cpu'
  assert 'SMTJAX_ATTENTION' not in starts[0]['env'] and starts[1]['env']['SMTJAX_ATTENTION'] == 'xla'


def test_train_step_compiles_once(tmp_path):
  c = tiny_config()
  trainer = train.Trainer.from_config(c)
  state = trainer.init_state(jax.random.PRNGKey(0))
  from smtjax.data import make_source
  from smtjax.data.pipeline import BatchIterator
  from smtjax.sharding import global_batch
  it = BatchIterator(make_source(c.data, 0), 'train', c.batch_size)
  for _ in range(3):
    state, _ = trainer.train_step(state, global_batch(next(it), trainer.batch_sharding), jax.random.PRNGKey(0))
  assert trainer.train_step._cache_size() == 1
  assert int(state.step) == 3
  # The count is real: a batch of another shape compiles a second program.
  odd = {k: v[:, :-1] for k, v in global_batch(next(it), trainer.batch_sharding).items()}
  trainer.train_step(state, odd, jax.random.PRNGKey(0))
  assert trainer.train_step._cache_size() == 2


@pytest.mark.parametrize('trainable,frozen,trained', [('teacher', 'cell', 'encoder'), ('rnn', 'decoder', 'cell')])
def test_frozen_networks_do_not_change(tmp_path, trainable, frozen, trained):
  c = tiny_config()
  c.smt.trainable = trainable
  c.num_steps = 3
  trainer = train.Trainer.from_config(c)
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
  sched = optim.learning_rate_schedule(c.optim, c.num_steps)
  np.testing.assert_allclose([sched(0), sched(50), sched(100), sched(999)], [0.0, 1.0, 2.0, 2.0], atol=1e-6)
  c.optim.schedule = 'cosine'
  sched = optim.learning_rate_schedule(c.optim, c.num_steps)
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


def _adam_step_updates(c, grads_seq, params):
  """The config's optimizer applied to a sequence of gradients; returns the last updates."""
  tx, _ = optim.make_optimizer(c, config_lib.frozen_networks(c))
  state = tx.init(params)
  for g in grads_seq:
    updates, state = tx.update(g, state, params)
  return updates


def test_per_network_clipping_keeps_the_rnn_update_independent_of_the_teacher():
  """clip_mode='per_network': the teacher's and the RNN's gradients are clipped to grad_clip each, so a huge
  teacher gradient does not shrink the RNN's step (it does under one global norm)."""
  c = tiny_config()
  c.optim.warmup_frac, c.optim.weight_decay, c.optim.grad_clip = 0.0, 0.0, 1.0
  nets = models.Networks.from_config(c)
  params = jax.jit(nets.init)(jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  def grads(teacher_norm, rnn_norm):  # random gradients with the given norm per network
    g = jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), params)
    scale = lambda t, n: jax.tree.map(lambda a: a * n / float(optim.global_norm(t)), t)
    teacher = scale({'encoder': g['encoder'], 'decoder': g['decoder']}, teacher_norm)
    return dict(g, **teacher, cell=scale(g['cell'], rnn_norm))
  seq = [grads(100.0, 0.5), grads(0.1, 0.5)]
  # Reference: Adam on the RNN's gradients alone (its norm 0.5 is under the limit: nothing to clip).
  ref_tx = optax.adam(c.optim.lr, b1=c.optim.b1, b2=c.optim.b2)
  ref_state = ref_tx.init(params['cell'])
  for g in seq:
    ref, ref_state = ref_tx.update(g['cell'], ref_state)
  c.optim.clip_mode = 'per_network'
  per_net = _adam_step_updates(c, seq, params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9), per_net['cell'], ref)
  c.optim.clip_mode = 'global'
  glob = _adam_step_updates(c, seq, params)
  assert max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(glob['cell']), jax.tree.leaves(ref))) > 1e-5
  # The transformation itself: each network's norm ends at min(norm, 1).
  out, _ = optim.clip_by_network_norm(1.0).update(seq[0], optax.EmptyState())
  norms = optim.network_norms(out)
  np.testing.assert_allclose([norms['teacher'], norms['rnn']], [1.0, 0.5], rtol=1e-5)


def test_published_architecture_trains_resumes_and_fine_tunes(tmp_path):
  """The published options on a tiny window-mode run: SMT with per-network clipping, the architecture
  check on resume covers the new fields, and DMT from it keeps the teacher (with its shared embedding)."""
  c = tiny_config('window')
  c.model.update(head_dim=8, rotary_fraction=0.5, use_bias=True, final_norm=True, share_embedding=True)
  c.optim.clip_mode = 'per_network'
  c.num_steps = 4
  smt_dir = str(tmp_path / 'smt')
  train.train_and_evaluate(c, smt_dir)
  rec = read_metrics(smt_dir)[0]
  assert rec['grad_norm_teacher'] > 0 and rec['grad_norm_rnn'] > 0
  np.testing.assert_allclose(rec['grad_norm'] ** 2, rec['grad_norm_teacher'] ** 2 + rec['grad_norm_rnn'] ** 2,
                             rtol=1e-4)
  c2 = c.copy_and_resolve_references()
  c2.model.share_embedding = False
  with pytest.raises(config_lib.ConfigError, match='model.share_embedding'):
    train.train_and_evaluate(c2, smt_dir)
  d = variants.dmt(c.copy_and_resolve_references(), context=2, rollout=4, every=2, lr=1e-3, batch_size=8,
                             num_steps=2)
  d.eval_every = d.checkpoint_every = 2
  d.init_from = smt_dir
  dmt_dir = str(tmp_path / 'dmt')
  train.train_and_evaluate(d, dmt_dir)
  _, src = train.load_params(smt_dir)
  _, out = train.load_params(dmt_dir)
  jax.tree.map(np.testing.assert_array_equal, src['encoder'], out['encoder'])
  jax.tree.map(np.testing.assert_array_equal, src['decoder'], out['decoder'])
  assert 'embed' not in out['readout']


def test_weight_decay_on_all_parameters_pulls_gains_to_one():
  """optim.weight_decay_on='all' (the public AdamW): with zero gradients every parameter moves by
  -lr * wd * (p - anchor), the anchor 1 for norm gains (the public gain is 1 + g, g decayed to 0) and 0 for
  the rest; 'matrices' leaves 1-D parameters alone."""
  c = tiny_config()
  c.model.use_bias = True
  c.optim.update(lr=0.1, weight_decay=0.5, warmup_frac=0.0, grad_clip=0.0)
  params = jax.jit(models.Networks.from_config(c).init)(jax.random.PRNGKey(0))
  params = jax.tree.map(lambda p: p + 0.3, params)  # gains 1.3, biases 0.3: both away from their anchors
  zeros = jax.tree.map(jnp.zeros_like, params)
  step = {}
  for on in ('all', 'matrices'):
    c.optim.weight_decay_on = on
    tx, _ = optim.make_optimizer(c, config_lib.frozen_networks(c))
    step[on], _ = tx.update(zeros, tx.init(params), params)
  gain = params['encoder']['block_0']['norm_attn']['scale']
  bias = params['decoder']['block_0']['mlp']['Dense_0']['bias']
  kernel = params['decoder']['head']['kernel']
  u = step['all']
  np.testing.assert_allclose(u['encoder']['block_0']['norm_attn']['scale'], -0.05 * (gain - 1.0), rtol=1e-5)
  np.testing.assert_allclose(u['decoder']['block_0']['mlp']['Dense_0']['bias'], -0.05 * bias, rtol=1e-5)
  np.testing.assert_allclose(u['decoder']['head']['kernel'], -0.05 * kernel, rtol=1e-5)
  u = step['matrices']
  assert float(jnp.abs(u['encoder']['block_0']['norm_attn']['scale']).max()) == 0.0
  assert float(jnp.abs(u['decoder']['block_0']['mlp']['Dense_0']['bias']).max()) == 0.0
  np.testing.assert_allclose(u['decoder']['head']['kernel'], -0.05 * kernel, rtol=1e-5)


def test_curriculum_trains_the_short_stage_then_the_run_from_its_parameters(tmp_path):
  """config.curriculum is its definition: a run at the short length in workdir/curriculum, then the configured
  run initialised from it; the two stages equal the same two runs launched by hand (init_from)."""
  c = tiny_config()
  c.num_steps, c.curriculum.length, c.curriculum.steps = 4, 4, 4
  with pytest.raises(config_lib.ConfigError, match='curriculum'):  # a DMT run starts from its SMT run
    config_lib.validate(variants.dmt(c.copy_and_resolve_references(), context=2, rollout=2, every=1),
                        init_from_later=True)
  half = c.copy_and_resolve_references()
  half.curriculum.steps = 0
  with pytest.raises(config_lib.ConfigError, match='both 0'):
    config_lib.validate(half)
  too_long = c.copy_and_resolve_references()
  too_long.curriculum.length = 8
  with pytest.raises(config_lib.ConfigError, match='curriculum.length'):
    train.train_and_evaluate(too_long, tmp_path / 'never')
  assert not (tmp_path / 'never').exists()  # refused before anything was written

  train.train_and_evaluate(c, tmp_path / 'run')
  first = config_lib.load_saved(tmp_path / 'run' / 'curriculum')
  rest = config_lib.load_saved(tmp_path / 'run')
  assert (first.data.seq_len, first.smt.future, first.num_steps) == (4, 4, 4)
  assert (rest.data.seq_len, rest.num_steps, rest.init_from) == (8, 4, str(tmp_path / 'run' / 'curriculum'))

  by_hand = tmp_path / 'by_hand'
  train.train_and_evaluate(first, by_hand / 'short')
  rest.init_from = str(by_hand / 'short')
  train.train_and_evaluate(rest, by_hand / 'full')
  strip = metrics_lib.without_timings
  assert strip(read_metrics(str(tmp_path / 'run' / 'curriculum'))) == strip(read_metrics(str(by_hand / 'short')))
  assert strip(read_metrics(str(tmp_path / 'run'))) == strip(read_metrics(str(by_hand / 'full')))
