"""Drift-robust SMT options (smt.rollout_steps, rollout_detach, rollout_decode, memory_noise): each equals
its step-by-step definition, is off by default, and is validated before compilation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from smtjax import config as config_lib
from smtjax import layers, losses, smt, train
from smtjax.errors import ConfigError
from tests.conftest import tiny_config
from tests.test_losses import _setup


def _metrics(c, nets, params, batch, rng=0):
  f = jax.jit(lambda p, b, r: smt.parallel_losses(nets.nets, p, b, r, c))
  return f(params, batch, jax.random.PRNGKey(rng))


def _mem(nets, params, x):
  """Teacher memory of x[:, :L] for every L = 0..T, prefix by prefix with the encoder alone."""
  B = x.shape[0]
  return lambda L: nets.encode(params, x[:, :L]) if L else nets.initial_memory(params, B)


def test_defaults_are_off_and_equal_one_step_loss():
  c, nets, params, batch = _setup('parallel', num_transitions=0)
  s = config_lib.default_config().smt
  assert (s.rollout_steps, s.rollout_detach, s.rollout_decode, s.memory_noise) == (1, False, 0.0, 0.0)
  total, m = _metrics(c, nets, params, batch)
  assert set(m) == {'loss', 'loss_dec', 'loss_dec0', 'loss_dyn', 'loss_unif'}
  x = np.asarray(batch['x'])
  mem = _mem(nets, params, x)
  one_step = np.mean([np.mean((np.asarray(nets.step(params, mem(L), x[:, L])) - np.asarray(mem(L + 1))) ** 2)
                      for L in range(x.shape[1])])
  np.testing.assert_allclose(m['loss_dyn'], one_step, rtol=1e-5)


@pytest.mark.parametrize('n', [3])
def test_rollout_equals_python_loop_definition(n):
  c, nets, params, batch = _setup('parallel', num_transitions=0, rollout_steps=n, rollout_decode=0.5)
  x, y = np.asarray(batch['x']), np.asarray(batch['y'])
  T = x.shape[1]
  mem = _mem(nets, params, x)
  se, ce_sum, n_valid = [], 0.0, 0
  for L in range(T + 1 - n):
    m = mem(L)
    for j in range(n):
      m = nets.step(params, m, x[:, L + j])
      se.append(np.mean((np.asarray(m) - np.asarray(mem(L + j + 1))) ** 2, axis=(1, 2)))
      ce, valid = losses.token_cross_entropy(nets.readout(params, m), jnp.asarray(y[:, L + j]))
      ce_sum += float(jnp.sum(ce))
      n_valid += int(jnp.sum(valid))
  total, m = _metrics(c, nets, params, batch)
  np.testing.assert_allclose(m['loss_dyn'], np.mean(se), rtol=1e-5)
  np.testing.assert_allclose(m['loss_roll_dec'], ce_sum / n_valid, rtol=1e-5)
  np.testing.assert_allclose(total, m['loss_dec'] + 0.1 * m['loss_dyn'] + 0.001 * m['loss_unif']
                             + 0.5 * m['loss_roll_dec'], rtol=1e-5)
  # Longer rollouts really differ from the one-step loss (the cell is untrained: its errors compound).
  c.smt.rollout_steps, c.smt.rollout_decode = 1, 0.0
  assert abs(float(_metrics(c, nets, params, batch)[1]['loss_dyn']) - float(m['loss_dyn'])) > 1e-6


def test_gradient_flows_through_the_rollout_unless_detached():
  """n = 2 from start 0 with clean (detached) targets: the start memory gets a gradient from both steps'
  errors through the rollout; with rollout_detach only from the first step's."""
  c, nets, params, batch = _setup('parallel', rollout_steps=2, dynamics_gradient='stop_target')
  x = batch['x']
  mems = nets.prefix_memories(params, x)

  def grads(detach):
    c.smt.rollout_detach = detach
    f = lambda p, ms: jnp.mean(smt.rollout_dynamics(nets.nets, p, ms[:, :1], ms[:, None, 1:3], x[:, None, :2], c,
                                                    jax.random.PRNGKey(0))[0])
    return jax.jit(jax.grad(f, argnums=(0, 1)))(params, mems)

  (gp_full, gm_full), (gp_det, gm_det) = grads(False), grads(True)
  first = lambda m0: 0.5 * losses.dynamics_loss(nets.step(params, m0, x[:, 0]), mems[:, 1])
  g_first = jax.grad(first)(mems[:, 0])
  np.testing.assert_allclose(gm_det[:, 0], g_first, rtol=1e-4, atol=1e-9)
  assert float(jnp.max(jnp.abs(gm_full[:, 0] - g_first))) > 1e-6  # the second step's error flows back
  assert float(jnp.max(jnp.abs(gm_full[:, 2:]))) == 0.0  # memories that are no input or target
  for g in (gp_full, gp_det):
    assert max(float(jnp.abs(v).max()) for v in jax.tree.leaves(g['cell'])) > 0.0


def test_perturb_memory_stays_on_the_rms_shell():
  m = layers.rms_norm(jax.random.normal(jax.random.PRNGKey(0), (4, 2, 16)))
  p = smt.perturb_memory(m, 0.5, jax.random.PRNGKey(1))
  np.testing.assert_allclose(jnp.sqrt(jnp.mean(p ** 2, axis=-1)), 1.0, rtol=1e-4)
  assert float(jnp.max(jnp.abs(p - m))) > 0.05
  np.testing.assert_array_equal(smt.perturb_memory(m, 0.0, jax.random.PRNGKey(1)), layers.rms_norm(m))


def test_memory_noise_changes_the_loss_reproducibly_and_keeps_targets_clean():
  c, nets, params, batch = _setup('parallel', num_transitions=0)
  clean = _metrics(c, nets, params, batch)[1]
  c.smt.memory_noise = 0.3
  a, b, other = (_metrics(c, nets, params, batch, r)[1] for r in (0, 0, 1))
  assert float(a['loss_dyn']) == float(b['loss_dyn'])  # same rng, same noise
  assert float(a['loss_dyn']) != float(other['loss_dyn'])
  assert abs(float(a['loss_dyn']) - float(clean['loss_dyn'])) > 1e-6
  np.testing.assert_allclose(a['mem_noise_std'], 0.3)
  # Only the cell's input is noisy: the decoder and uniformity terms see the clean memories.
  assert float(a['loss_dec']) == float(clean['loss_dec']) and float(a['loss_unif']) == float(clean['loss_unif'])


def test_matched_noise_scales_with_the_one_step_error_and_is_detached():
  c, nets, params, batch = _setup('parallel', num_transitions=0)
  one_step = float(_metrics(c, nets, params, batch)[1]['loss_dyn'])
  c.smt.memory_noise, c.smt.memory_noise_mode = 2.0, 'matched'
  m = _metrics(c, nets, params, batch)[1]
  np.testing.assert_allclose(m['mem_noise_std'], 2.0 * np.sqrt(one_step), rtol=1e-5)
  # Same noise as a fixed sigma of that size: same gradients, so none flows through the measured error.
  grad = lambda s: jax.jit(jax.grad(lambda p: smt.parallel_losses(nets.nets, p, batch, jax.random.PRNGKey(0), s)[0]))(
      params)
  g_matched = grad(c)
  c.smt.memory_noise, c.smt.memory_noise_mode = float(m['mem_noise_std']), 'fixed'
  g_fixed = grad(c)
  for u, v in zip(jax.tree.leaves(g_matched), jax.tree.leaves(g_fixed), strict=True):
    np.testing.assert_allclose(u, v, rtol=2e-3, atol=1e-7)


@pytest.mark.parametrize('field,value,mode', [('rollout_steps', 0, 'parallel'), ('rollout_steps', 9, 'parallel'),
                                              ('rollout_decode', -1.0, 'parallel'), ('memory_noise', -0.1, 'parallel'),
                                              ('memory_noise_mode', 'loud', 'parallel'),
                                              ('rollout_steps', 2, 'window'), ('memory_noise', 0.1, 'window'),
                                              ('rollout_detach', True, 'parallel'),  # n = 1: nothing to detach
                                              ('rollout_decode_readout', 'thawed', 'parallel')])
def test_bad_drift_options_name_the_field(field, value, mode):
  c = tiny_config(mode)
  c.smt[field] = value
  with pytest.raises(ConfigError, match=f'smt.{field}'):
    config_lib.validate(c)


def test_every_option_together_with_padding_and_sampled_starts_equals_the_loop_definition():
  """Sampled starts, fixed memory noise, n = 2 rolled steps and the rolled readout loss, on sequences with
  padding (x = -1: the memory stays, the pair and its target drop out), against a loop over the sampled
  starts: each start's terms weighted by its stratum's size, over the count of every start's terms."""
  c, nets, params, batch = _setup('parallel', num_transitions=3, rollout_steps=2, memory_noise=0.3,
                                  rollout_decode=0.5)
  x, y = np.array(batch['x']), np.array(batch['y'])
  x[0, -2:], y[0, -2:] = -1, -1  # trailing padding, as keys_values pads
  x[1, :2], y[1, :2] = -1, -1  # leading padding
  batch = {'x': jnp.asarray(x), 'y': jnp.asarray(y)}
  B, T = x.shape
  r_dyn = jax.random.split(jax.random.PRNGKey(0), 3)[0]  # parallel_losses' key for the dynamics
  starts, weight = map(np.asarray, smt.sample_positions(r_dyn, B, T - 1, 3))  # starts 0..T-2 for 2 steps
  assert sorted(weight) == sorted([2, 2, 3]) and starts.shape == (B, 3)
  eps = np.asarray(jax.random.normal(jax.random.fold_in(r_dyn, 1), (B * 3,) + (c.model.num_mem_tokens, 16)))
  mem = _mem(nets, params, jnp.asarray(x))
  se = ce = 0.0
  for b in range(B):
    for i, L in enumerate(starts[b]):
      m = layers.rms_norm(mem(int(L))[b:b + 1] + 0.3 * eps[b * 3 + i][None])
      for j in range(2):
        t = int(L) + j
        if x[b, t] >= 0:  # a padding input leaves the memory as it is and is no pair
          m = nets.step(params, m, jnp.asarray(x[b:b + 1, t]))
          se += weight[i] * float(np.mean((np.asarray(m) - np.asarray(mem(t + 1)[b:b + 1])) ** 2))
        if y[b, t] >= 0:
          ce += weight[i] * float(losses.token_cross_entropy(nets.readout(params, m), jnp.asarray(y[b:b + 1, t]))[0][0])
  every = [(b, L + j) for b in range(B) for L in range(T - 1) for j in range(2)]  # every start's two steps
  _, m = _metrics(c, nets, params, batch)
  np.testing.assert_allclose(m['loss_dyn'], se / sum(x[b, t] >= 0 for b, t in every), rtol=1e-5)
  np.testing.assert_allclose(m['loss_roll_dec'], ce / sum(y[b, t] >= 0 for b, t in every), rtol=1e-5)


def test_rolled_readout_loss_at_one_step_and_what_it_trains():
  """rollout_decode works with rollout_steps=1 (the readout on the one-step predictions); it trains the
  readout (the teacher's decoder) only with rollout_decode_readout='train'."""
  c, nets, params, batch = _setup('parallel', num_transitions=0, rollout_decode=1.0)
  c.smt.coef_dec = c.smt.coef_dyn = c.smt.coef_unif = 0.0  # only loss_roll_dec in the total
  x, y = np.asarray(batch['x']), np.asarray(batch['y'])
  mem = _mem(nets, params, batch['x'])
  ce, valid = zip(*(losses.token_cross_entropy(nets.readout(params, nets.step(params, mem(L), x[:, L])), y[:, L])
                    for L in range(x.shape[1])))
  total, m = _metrics(c, nets, params, batch)
  np.testing.assert_allclose(m['loss_roll_dec'], np.sum(ce) / np.sum(valid), rtol=1e-5)
  np.testing.assert_allclose(total, m['loss_roll_dec'], rtol=1e-6)
  for mode, decoder_trained in (('train', True), ('frozen', False)):
    c.smt.rollout_decode_readout = mode
    g = jax.jit(jax.grad(lambda p: smt.parallel_losses(nets.nets, p, batch, jax.random.PRNGKey(0), c)[0]))(params)
    norm = lambda tree: max(float(jnp.abs(v).max()) for v in jax.tree.leaves(tree))
    assert norm(g['cell']) > 0
    assert (norm(g['decoder']) > 0) == decoder_trained, mode


def test_evaluation_reports_the_one_step_dynamics_loss_whatever_was_trained():
  """With rolled or noisy training, loss_dyn_test is still the one-step MSE from clean memories, and the
  trained (rolled, noisy) one is loss_dyn_rollout_test."""
  from smtjax.evaluation import EvalSpec, eval_step
  c, nets, params, batch = _setup('parallel', num_transitions=0, rollout_steps=3, memory_noise=0.2)
  rng = jax.random.PRNGKey(0)
  step = jax.jit(lambda p, b, r: eval_step(p, b, r, nets=nets.nets, config=c, spec=EvalSpec(objective=True)))
  got = step(params, batch, rng)['objective']
  trained = _metrics(c, nets, params, batch)[1]
  c.smt.rollout_steps, c.smt.memory_noise = 1, 0.0
  plain = _metrics(c, nets, params, batch)[1]
  np.testing.assert_allclose(got['loss_dyn'], plain['loss_dyn'], rtol=1e-6)
  np.testing.assert_allclose(got['loss_dyn_rollout'], trained['loss_dyn'], rtol=1e-6)
  assert abs(float(plain['loss_dyn']) - float(trained['loss_dyn'])) > 1e-6


def test_training_with_every_option_logs_its_metrics(tmp_path):
  c = tiny_config()
  c.num_steps, c.eval_every, c.checkpoint_every = 2, 2, 2
  c.smt.rollout_steps, c.smt.rollout_decode, c.smt.memory_noise, c.smt.memory_noise_mode = 3, 1.0, 0.5, 'matched'
  final = train.train_and_evaluate(c, str(tmp_path))
  for k in ('loss_roll_dec_test', 'mem_noise_std_test', 'rnn_only_accuracy'):
    assert np.isfinite(final[k]), k


def test_bench_drift_variants_parse_and_bad_ones_fail_before_compiling():
  """experiments.bench_drift --variant=NAME:key=value,...: parsed into config.smt overrides; a malformed one or
  an unknown field is a one-line usage error. (A subprocess: importing the script
  defines a --config flag, as experiments.bench does.)"""
  import subprocess
  import sys

  from tests.conftest import ROOT
  code = ('from experiments._cli import parse_variant as p; '
          'print(p("r:rollout_steps=4, num_transitions=8,dynamics_gradient=stop_target"))')
  r = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True)
  assert r.returncode == 0, r.stderr[-2000:]
  assert r.stdout.strip() == "('r', {'rollout_steps': 4, 'num_transitions': 8, 'dynamics_gradient': 'stop_target'})"
  for variant, message in (('bad', 'expected NAME:key=value'), ('r:rollout_steps', 'expected NAME:key=value'),
                           ('r:no_such=1', 'config.smt.no_such: no such field'),
                           ('smt:rollout_steps=2', "'smt' is plain")):
    r = subprocess.run([sys.executable, '-m', 'experiments.bench_drift', '--config=configs/stack.py:small',
                        f'--variant={variant}'], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0 and message in r.stderr and 'Traceback' not in r.stderr, (variant, r.stderr[-2000:])
