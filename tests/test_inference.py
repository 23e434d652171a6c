"""Inference API (smtjax/inference.py) against step-by-step reference loops, and the evaluate/sample tools."""

import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from smtjax import inference, losses, models, runs, train
from tests.conftest import ROOT, JittedNetworks, tiny_config

B, T, V = 3, 8, 10


def _model(attention='causal'):
  c = tiny_config()
  c.model.encoder_attention = attention
  nets = models.Networks.from_config(c)
  params = jax.jit(nets.init)(jax.random.PRNGKey(0))
  # Sharper logits than the 0.02-scale init, so argmax comparisons are far from ties.
  params['decoder']['head']['kernel'] = params['decoder']['head']['kernel'] * 50.0
  return nets, params


def _data():
  x = jax.random.randint(jax.random.PRNGKey(1), (B, T), 0, V)
  y = jax.random.randint(jax.random.PRNGKey(2), (B, T), 0, V)
  y = y.at[0, 3].set(-1).at[1, 5].set(-1)  # some positions without a target
  return x, y


def _check_scores(s, logits_ref, y_ref):
  ce, valid = losses.token_cross_entropy(logits_ref, y_ref)
  np.testing.assert_allclose(s['ce'], ce, rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(s['valid'], valid)
  np.testing.assert_array_equal(s['correct'], (jnp.argmax(logits_ref, -1) == y_ref) & valid)


@pytest.fixture(scope='module')
def causal():
  return _model('causal')


@pytest.mark.parametrize('read_len,eval_len', [(3, 4), (2, T - 1)])
def test_read_equals_reference_loop(causal, read_len, eval_len):
  """eval_len scored positions (the public loss_eval's), the last one reaching y[T-1] when
  read_len + eval_len = T + 1."""
  nets, params = causal
  jn = JittedNetworks(nets)
  x, y = _data()
  s = inference.read(nets, params, x, y, read_len, eval_len)
  assert s['ce'].shape == (B, eval_len)
  mem = jn.encode(params, x[:, :read_len])
  logits = []
  for j in range(eval_len):  # position j: the memory after j RNN steps predicts y[read_len-1+j]
    logits.append(jn.readout(params, mem))
    if j < eval_len - 1:
      mem = jn.step(params, mem, x[:, read_len + j])
  _check_scores(s, jnp.stack(logits, 1), y[:, read_len - 1:read_len - 1 + eval_len])


def test_read_rejects_bad_lengths(causal):
  nets, params = causal
  x, y = _data()
  for read_len, eval_len in ((0, 2), (5, T - 3), (3, 0)):
    with pytest.raises(ValueError, match='read_len|eval_len'):
      inference.read(nets, params, x, y, read_len, eval_len)


def test_rnn_only_equals_reference_loop(causal):
  nets, params = causal
  jn = JittedNetworks(nets)
  x, y = _data()
  s = inference.rnn_only(nets, params, x, y)
  mem = jn.initial_memory(params, B)
  logits = []
  for t in range(T):
    mem = jn.step(params, mem, x[:, t])
    logits.append(jn.readout(params, mem))
  _check_scores(s, jnp.stack(logits, 1), y)


def test_teacher_scores_causal_equals_encoding_each_prefix(causal):
  nets, params = causal
  jn = JittedNetworks(nets)
  x, y = _data()
  s = inference.teacher_scores(nets, params, x, y)
  logits = [jn.decode(params, jn.encode(params, x[:, :t + 1]), jnp.zeros((B, 0), jnp.int32))[:, 0] for t in range(T)]
  _check_scores(s, jnp.stack(logits, 1), y)


def test_teacher_scores_bidirectional_equals_encoding_each_window():
  nets, params = _model('bidirectional')
  jn = JittedNetworks(nets)
  x, y = _data()
  L = 3
  s = inference.teacher_scores(nets, params, x, y, L)
  padded = jnp.concatenate([jnp.full((B, L - 1), -1, x.dtype), x], axis=1)
  logits = [jn.decode(params, jn.encode(params, padded[:, t:t + L]), jnp.zeros((B, 0), jnp.int32))[:, 0]
            for t in range(T)]
  _check_scores(s, jnp.stack(logits, 1), y)
  chunked = inference.teacher_scores(nets, params, x, y, L, chunk=3)
  np.testing.assert_allclose(chunked['ce'], s['ce'], rtol=1e-5, atol=1e-6)


def test_write_reproducible_and_greedy_equals_loop(causal):
  nets, params = causal
  jn = JittedNetworks(nets)
  prompt, _ = _data()
  n = 6
  a = inference.write(nets, params, prompt, n, 1.0, jax.random.PRNGKey(7))
  b = inference.write(nets, params, prompt, n, 1.0, jax.random.PRNGKey(7))
  c = inference.write(nets, params, prompt, n, 1.0, jax.random.PRNGKey(8))
  assert a.shape == (B, n) and a.dtype == jnp.int32
  assert np.all((np.asarray(a) >= 0) & (np.asarray(a) < V))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  greedy = inference.write(nets, params, prompt, n, 0.0, jax.random.PRNGKey(7))
  mem, ref = jn.encode(params, prompt), []
  for _ in range(n):
    tok = jnp.argmax(jn.readout(params, mem), -1).astype(jnp.int32)
    ref.append(tok)
    mem = jn.step(params, mem, tok)
  np.testing.assert_array_equal(greedy, jnp.stack(ref, 1))


def test_teacher_generate_reproducible_and_greedy_equals_loop(causal):
  nets, params = causal
  jn = JittedNetworks(nets)
  prompt, _ = _data()
  prompt = prompt[:, :3]
  n, L = 5, 4
  a = inference.teacher_generate(nets, params, prompt, n, L, 1.0, jax.random.PRNGKey(3))
  b = inference.teacher_generate(nets, params, prompt, n, L, 1.0, jax.random.PRNGKey(3))
  assert a.shape == (B, n)
  np.testing.assert_array_equal(a, b)
  greedy = inference.teacher_generate(nets, params, prompt, n, L, 0.0, jax.random.PRNGKey(3))
  seq = jnp.concatenate([jnp.full((B, L), -1, jnp.int32), prompt], 1)
  for _ in range(n):
    mem = jn.encode(params, seq[:, -L:])
    tok = jnp.argmax(jn.decode(params, mem, jnp.zeros((B, 0), jnp.int32))[:, 0], -1).astype(jnp.int32)
    seq = jnp.concatenate([seq, tok[:, None]], 1)
  np.testing.assert_array_equal(greedy, seq[:, -n:])


def test_rnn_generate_reproducible(causal):
  nets, params = causal
  a = inference.rnn_generate(nets, params, 2, 5, 1.0, jax.random.PRNGKey(0))
  b = inference.rnn_generate(nets, params, 2, 5, 1.0, jax.random.PRNGKey(0))
  assert a.shape == (2, 5)
  np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- on a trained workdir

@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  d = tmp_path_factory.mktemp('inference_run')
  c = tiny_config()
  c.num_steps = c.eval_every = c.checkpoint_every = 4
  c.evaluate.num_batches = 2
  c.sample.num = 3
  train.train_and_evaluate(c, str(d))
  return str(d)


KEYS = ('rnn_loss', 'teacher_loss', 'rnn_only_loss', 'rnn_accuracy', 'teacher_accuracy', 'rnn_only_accuracy',
        'rnn_loss_bits', 'teacher_loss_bits', 'rnn_only_loss_bits', 'read_len', 'eval_len', 'num_sequences')


def test_evaluate_workdir_writes_eval_json_and_plot(workdir):
  r = runs.evaluate_workdir(workdir)
  with open(os.path.join(workdir, 'eval.json')) as f:
    j = json.load(f)
  for k in KEYS:
    assert isinstance(j[k], (int, float)) and math.isfinite(j[k]), (k, j.get(k))
  assert j['read_len'] == T // 2 and j['eval_len'] == T - T // 2 + 1 and j['num_sequences'] == 2 * 8
  assert len(j['rnn_loss_per_position']) == j['eval_len']
  # retrieval: the only target is y[T-1], scored at the last rollout position; the others have none
  assert j['rnn_loss_per_position'][:-1] == [None] * (j['eval_len'] - 1)
  assert math.isclose(j['rnn_loss_per_position'][-1], j['rnn_loss'], rel_tol=1e-6)
  assert math.isclose(j['rnn_loss_bits'], j['rnn_loss'] / math.log(2), rel_tol=1e-9)
  assert 'nats' in j['units']
  assert r['rnn_loss'] == j['rnn_loss']
  assert os.path.getsize(os.path.join(workdir, 'eval_loss_by_position.png')) > 1000
  with pytest.raises(ValueError, match='reaches past the sequence'):
    runs.evaluate_workdir(workdir, read_len=5, eval_len=5, write_files=False)


def test_sample_workdir_is_reproducible(workdir):
  for mode in runs.MODES:
    path, out = runs.sample_workdir(workdir, mode, seed=1)
    assert path.name == 'samples.txt'
    text = path.read_text()
    assert out['tokens'].shape == (3, T - T // 2) and text.count('--- sample') == 3
    path2, out2 = runs.sample_workdir(workdir, mode, seed=1)
    assert path2.read_text() == text
  _, greedy = runs.sample_workdir(workdir, 'rnn', temperature=0.0)
  _, greedy2 = runs.sample_workdir(workdir, 'rnn', temperature=0.0, seed=5)
  np.testing.assert_array_equal(greedy['tokens'], greedy2['tokens'])


def test_evaluate_cli(workdir):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  p = subprocess.run([sys.executable, '-m', 'experiments.evaluate', f'--workdir={workdir}', '--num_batches=1',
                      '--read_len=3', '--eval_len=6'], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert p.returncode == 0, p.stderr[-2000:]
  assert 'eval.json' in p.stdout
  with open(os.path.join(workdir, 'eval.json')) as f:
    j = json.load(f)
  assert (j['read_len'], j['eval_len'], j['num_sequences']) == (3, 6, 8)
  assert math.isfinite(j['rnn_loss'])


def test_evaluate_cli_scores_longer_sequences(workdir):
  p = subprocess.run([sys.executable, '-m', 'experiments.evaluate', f'--workdir={workdir}', '--num_batches=1',
                      f'--seq_len={2 * T}'], cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS='cpu'), capture_output=True,
                     text=True, timeout=120)
  assert p.returncode == 0, p.stderr[-2000:]
  assert f'eval_T{2 * T}.json' in p.stdout
  with open(os.path.join(workdir, f'eval_T{2 * T}.json')) as f:
    j = json.load(f)
  assert (j['seq_len'], j['trained_seq_len'], j['read_len']) == (2 * T, T, T)
  assert math.isfinite(j['rnn_only_accuracy']) and math.isfinite(j['teacher_accuracy'])


def test_summarize_reads_the_teacher_only_where_it_was_scored():
  """A spec that reads a prefix without scoring the teacher (EvalSpec(teacher=False, read_len=...)) gives the
  RNN's per-position scores and no teacher ones."""
  from smtjax.evaluation import summarize
  read = {'ce': np.array([2.0, 3.0]), 'n': np.array([2, 3]), 'hit': np.array([1, 3])}
  out = summarize({'read': read, 'num_batches': 1})
  assert out['rnn_loss'] == 1.0 and out['rnn_accuracy'] == 0.8 and out['num_targets_per_position'] == [2, 3]
  assert not any(k.startswith('teacher') or k == 'num_teacher_targets' for k in out)
  teacher = {'ce': np.array(5.0), 'n': np.array(5), 'hit': np.array(4)}
  both = summarize({'read': read, 'teacher_read': read, 'teacher': teacher, 'num_batches': 1})
  assert both['teacher_loss_read_targets'] == 1.0 and both['num_teacher_targets'] == 5
