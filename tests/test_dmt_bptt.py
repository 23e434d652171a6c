"""DMT and BPTT: gradient paths do what their option names say; runs, init_from, and rollouts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from smtjax import bptt, dmt, losses, models, train, variants
from smtjax import config as config_lib
from smtjax.checkpoint import CheckpointError
from smtjax.data import make_source
from smtjax.metrics import read_metrics
from tests.conftest import JittedNetworks, tiny_config

B, Td = 2, 6


def _dmt_policy(backprop: bool) -> dict:
  """DMT's gradient policy for Networks.rollout: without backprop_through_rollout, every step's input memory
  is detached, the first (the teacher's) included."""
  return {} if backprop else {'truncation': 1, 'detach_initial': True}


def _setup(cell='mlp'):
  c = tiny_config(cell=cell)
  nets = models.Networks.from_config(c)
  params = jax.jit(nets.init)(jax.random.PRNGKey(0))
  x = jax.random.randint(jax.random.PRNGKey(1), (B, Td), 0, 10)
  m0 = jax.jit(nets.encode)(params, x)
  return c, nets, params, x, m0


@pytest.mark.parametrize('backprop', [False, True])
def test_dmt_rollout_gradient_paths(backprop):
  """Memory r_t with respect to the start memory and to each step's input token embedding: with one-step
  gradients only step t's own input reaches r_t (no earlier step, not the start memory); with full
  backpropagation every earlier step does."""
  c, nets, params, x, m0 = _setup()
  t = Td - 1
  table = params['cell']['embed']['embedding']

  def r_t(m0, d_emb):  # d_emb [Td, V, D]: step s reads the cell embedding table + d_emb[s] (zeros)
    def body(mem, inp):
      x_B, d = inp
      p = dict(params, cell=dict(params['cell'], embed={'embedding': table + d}))
      if not backprop:
        mem = jax.lax.stop_gradient(mem)
      new = nets.step(p, mem, x_B)
      return new, new
    _, mems = jax.lax.scan(body, m0, (x.T, d_emb))
    return jnp.sum(mems[t] ** 2)

  # The scan above is DMT's rollout (Networks.rollout under its policy) with a per-step embedding: same memories.
  np.testing.assert_allclose(r_t(m0, jnp.zeros((Td,) + table.shape)),
                             jnp.sum(nets.rollout(params, m0, x, **_dmt_policy(backprop))[:, t] ** 2), rtol=1e-5)
  g_m0, g_emb = jax.jit(jax.grad(r_t, argnums=(0, 1)))(m0, jnp.zeros((Td,) + table.shape))
  g_m0_lib = jax.jit(jax.grad(lambda m: jnp.sum(nets.rollout(params, m, x, **_dmt_policy(backprop))[:, t] ** 2)))(m0)
  np.testing.assert_allclose(g_m0, g_m0_lib, rtol=1e-4, atol=1e-8)
  assert jnp.abs(g_emb[t]).max() > 0  # a step's memory always depends on its own input
  earlier = float(jnp.abs(g_emb[:t]).max())
  if backprop:
    assert earlier > 0 and jnp.abs(g_m0_lib).max() > 0
  else:
    assert earlier == 0.0 and float(jnp.abs(g_m0_lib).max()) == 0.0


def test_dmt_one_step_parameter_gradient_equals_single_step_gradient():
  """With one-step gradients, step t's loss trains the cell exactly as a single step from the (fixed)
  on-policy memory m_{t-1} would."""
  c, nets, params, x, m0 = _setup()
  target = jax.random.normal(jax.random.PRNGKey(5), m0.shape)
  t = Td - 1
  loss_roll = lambda p: jnp.mean((nets.rollout(p, m0, x, **_dmt_policy(False))[:, t] - target) ** 2)
  mems = jax.jit(lambda p: nets.rollout(p, m0, x, **_dmt_policy(False)))(params)
  loss_one = lambda p: jnp.mean((nets.step(p, mems[:, t - 1], x[:, t]) - target) ** 2)
  g_roll = jax.jit(jax.grad(loss_roll))(params)['cell']
  g_one = jax.jit(jax.grad(loss_one))(params)['cell']
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7), g_roll, g_one)
  full_loss = lambda p: jnp.mean((nets.rollout(p, m0, x, **_dmt_policy(True))[:, t] - target) ** 2)
  g_full = jax.jit(jax.grad(full_loss))(params)['cell']
  diff = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(g_full), jax.tree.leaves(g_one)))
  assert diff > 1e-6


@pytest.mark.parametrize('truncation', [0, 2, Td + 3])
def test_bptt_truncation_and_the_initial_memory_gradient(truncation):
  """The learned initial memory always gets the gradient of the first window; a target beyond a cut does not
  reach it; a truncation longer than the sequence changes nothing."""
  c = tiny_config(cell='gru')
  c.method, c.model.initial_memory = 'bptt', 'learned'
  nets = models.Networks.from_config(c)
  params = jax.jit(nets.init)(jax.random.PRNGKey(0))
  x = jax.random.randint(jax.random.PRNGKey(1), (B, Td), 0, 10)

  def grad_m0(y, trunc):
    c.bptt.truncation = trunc
    loss = lambda p: bptt.bptt_losses(nets, p, {'x': x, 'y': y}, None, c)[0]
    return jax.jit(jax.grad(loss))(params)['init_memory']

  first = jnp.full(x.shape, -1).at[:, 0].set(3)  # a target after the first step only
  last = jnp.full(x.shape, -1).at[:, -1].set(3)  # a target at the last step only
  g_first, g_last = grad_m0(first, truncation), grad_m0(last, truncation)
  assert jnp.abs(g_first).max() > 0
  if 0 < truncation < Td:
    assert jnp.abs(g_last).max() == 0.0
    np.testing.assert_allclose(g_first, grad_m0(first, 0), rtol=1e-5, atol=1e-8)  # within the first window: exact
  else:
    assert jnp.abs(g_last).max() > 0
    if truncation:
      np.testing.assert_allclose(g_last, grad_m0(last, 0), rtol=1e-5, atol=1e-8)


def test_bptt_rollout_equals_step_loop():
  c, nets, params, x, m0 = _setup('transformer')
  mems = jax.jit(lambda: nets.rollout(params, m0, x, truncation=2))()
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


def _np_uniformity(z, t=2.0):
  z = np.asarray(z, np.float64)
  z = z / np.linalg.norm(z, axis=-1, keepdims=True)
  n = len(z)
  return np.log(np.mean([np.exp(-t * np.sum((z[i] - z[j]) ** 2)) for i in range(n) for j in range(i + 1, n)]))


def _np_decoder_loss(nets, params, mems, starts, x, y, Tf, gamma):
  """Pooled gamma-weighted decoder loss and its position-0 mean: the memory that has read n tokens reads
  future inputs x[n:n+Tf-1] and predicts y[n-1:n+Tf-1]; positions past the end are missing."""
  num = den = num0 = den0 = 0.0
  B, T = x.shape
  for m, n in zip(mems, starts):
    fut = np.full((B, Tf - 1), -1, np.int32)
    tgt = np.full((B, Tf), -1, np.int32)
    for j in range(Tf):
      if j < Tf - 1 and n + j < T:
        fut[:, j] = x[:, n + j]
      if n - 1 + j < T:
        tgt[:, j] = y[:, n - 1 + j]
    ce, valid = losses.token_cross_entropy(nets.decode(params, m, jnp.asarray(fut)), jnp.asarray(tgt))
    ce, valid = np.asarray(ce), np.asarray(valid)
    w = gamma ** np.arange(Tf) * valid
    num, den = num + np.sum(w * ce), den + np.sum(w)
    num0, den0 = num0 + np.sum(ce[:, 0]), den0 + np.sum(valid[:, 0])
  return num / den, num0 / den0


@pytest.mark.parametrize('mode,term', [('window', 'teacher'), ('window', 'rnn'), ('parallel', 'teacher')])
def test_dmt_losses_equal_step_by_step_definition(mode, term):
  """dmt_losses against the definition written step by step (a Python loop of encoder calls and RNN
  steps): which memories are compared, which targets each readout and decoder term reads, and which terms
  are trained (published: 10 x memory MSE + readout CE) or only logged."""
  c = tiny_config(mode)
  Tc, Td, k = (3, 6, 2) if mode == 'window' else (2, 6, 3)
  c = variants.dmt(c, context=Tc, rollout=Td, every=k)
  c.dmt.decoder_term = c.dmt.uniformity_term = term
  c.smt.gamma = 0.9
  Tf, T = c.smt.future, c.data.seq_len
  nets = JittedNetworks(models.Networks.from_config(c))
  params = jax.jit(nets.init)(jax.random.PRNGKey(0))
  # A readout copy that differs from the decoder, so using the wrong one shows.
  params['readout'] = jax.tree.map(lambda p: p * 1.1 + 0.01, params['decoder'])
  r = np.random.default_rng(5)
  x = r.integers(0, 10, size=(3, T)).astype(np.int32)
  y = r.integers(0, 10, size=(3, T)).astype(np.int32)
  y[:, 1::4] = -1
  batch = {'x': jnp.asarray(x), 'y': jnp.asarray(y)}

  def teacher(n):  # the teacher's memory after reading n tokens
    return nets.encode(params, x[:, n - Tc:n]) if mode == 'window' else nets.encode(params, x[:, :n])
  rnn = [teacher(Tc)]  # r_0 = the teacher's memory; r_s after reading x[Tc+s-1]
  for s in range(Td):
    rnn.append(nets.step(params, rnn[-1], x[:, Tc + s]))
  rnn = [np.asarray(m) for m in rnn]
  want = {'loss_mem': np.mean([np.mean((rnn[s] - np.asarray(teacher(Tc + s))) ** 2) for s in range(k, Td + 1, k)])}
  ce, valid = losses.token_cross_entropy(jnp.stack([nets.readout(params, m) for m in rnn], 1), y[:, Tc - 1:Tc + Td])
  want['loss_readout'] = np.sum(ce) / np.sum(valid)
  t_steps = list(range(0, Td, k))  # the public code's teacher-side steps 0, k, ..., Td-k
  want['loss_dec_teacher'], want['loss_dec0_teacher'] = _np_decoder_loss(
      nets, params, [teacher(Tc + s) for s in t_steps], [Tc + s for s in t_steps], x, y, Tf, 0.9)
  want['loss_unif_teacher'] = _np_uniformity(
      np.concatenate([np.asarray(teacher(Tc + s)).reshape(3, -1) for s in t_steps]))
  want['loss'] = 10 * want['loss_mem'] + want['loss_readout']
  if term == 'rnn':
    r_steps = list(range(k, Td + 1, k))
    want['loss_dec'], want['loss_dec0'] = _np_decoder_loss(
        nets, params, [rnn[s] for s in r_steps], [Tc + s for s in r_steps], x, y, Tf, 0.9)
    want['loss_unif'] = _np_uniformity(np.concatenate(rnn[1:]).reshape(-1, rnn[0].shape[-1]))
    want['loss'] += want['loss_dec'] + 0.01 * want['loss_unif']

  total, got = jax.jit(lambda p, b: dmt.dmt_losses(nets.nets, p, b, jax.random.PRNGKey(0), c))(params, batch)
  assert set(got) == set(want)
  for name in want:
    np.testing.assert_allclose(got[name], want[name], rtol=2e-4, atol=1e-6, err_msg=name)
  np.testing.assert_allclose(total, want['loss'], rtol=2e-4)
  g = jax.jit(jax.grad(lambda p: dmt.dmt_losses(nets.nets, p, batch, jax.random.PRNGKey(0), c)[0]))(params)
  for net in ('encoder', 'decoder'):  # the teacher's terms are constants: nothing reaches it
    assert max(float(jnp.abs(v).max()) for v in jax.tree.leaves(g[net])) == 0.0


def test_dmt_readout_loss_trains_the_readout_and_never_the_cell():
  """DMT's readout cross-entropy reads detached memories: its gradient reaches params['readout'] and nothing
  else (the cell learns only from the memory MSE); the teacher gets no gradient from any term."""
  c = variants.dmt(tiny_config(), context=2, rollout=6, every=3)
  c.dmt.coef_mem = 0.0  # the readout term alone
  nets = models.Networks.from_config(c)
  params = jax.jit(nets.init)(jax.random.PRNGKey(0))
  params['readout'] = jax.tree.map(jnp.copy, params['decoder'])
  x = jax.random.randint(jax.random.PRNGKey(1), (3, c.data.seq_len), 0, 10)
  batch = {'x': x, 'y': jnp.roll(x, -1, axis=1)}
  g = jax.jit(jax.grad(lambda p: dmt.dmt_losses(nets, p, batch, jax.random.PRNGKey(0), c)[0]))(params)
  largest = {k: max(float(jnp.abs(v).max()) for v in jax.tree.leaves(t)) for k, t in g.items()}
  assert largest['readout'] > 0
  assert largest['cell'] == largest['encoder'] == largest['decoder'] == 0.0, largest
  c.dmt.coef_mem = 10.0  # with the memory term the cell learns, the teacher still does not
  g = jax.jit(jax.grad(lambda p: dmt.dmt_losses(nets, p, batch, jax.random.PRNGKey(0), c)[0]))(params)
  largest = {k: max(float(jnp.abs(v).max()) for v in jax.tree.leaves(t)) for k, t in g.items()}
  assert largest['cell'] > 0 and largest['encoder'] == largest['decoder'] == 0.0, largest


def test_dmt_fine_tunes_from_smt_run(smt_workdir, tmp_path):
  c = _dmt_config(smt_workdir)
  final = train.train_and_evaluate(c, str(tmp_path))
  records = read_metrics(str(tmp_path))
  assert final['loss_mem'] < records[0]['loss_mem']  # the RNN imitates the teacher better
  _, src = train.load_params(str(smt_workdir))
  _, out = train.load_params(str(tmp_path))
  jax.tree.map(np.testing.assert_array_equal, src['encoder'], out['encoder'])  # teacher frozen
  jax.tree.map(np.testing.assert_array_equal, src['decoder'], out['decoder'])
  changed = lambda a, b: any(np.abs(u - v).max() > 0 for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  assert changed(src['cell'], out['cell'])
  assert changed(src['decoder'], out['readout'])  # the readout copy is fine-tuned
  assert {'loss_mem', 'loss_readout', 'loss_dec_teacher', 'loss_unif_teacher'} <= set(records[0])
  assert 'loss_dec' not in records[0]  # the published objective: no decoder term on the RNN's memories


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


def test_padded_copy_is_the_short_task_for_bptt():
  """A copy string shorter than T/2 is left-padded, and padding leaves the RNN's memory as it is: BPTT's loss and
  gradients at T=16 with a 3-symbol string equal those of the unpadded task at T=6 (docs/configs.md: why the
  paper's long copies are strings of T/2)."""
  c = tiny_config(cell='gru')
  c.method, c.data.name, c.data.options = 'bptt', 'copy', {'length': 3, 'num_symbols': 8, 'reverse': True}
  nets = models.Networks.from_config(c)
  params = jax.jit(nets.init)(jax.random.PRNGKey(0))
  out = {}
  for T in (6, 16):
    c.data.seq_len = T
    b = make_source(c.data, 0).get_batch('train', 0, 0, 4)
    batch = {'x': jnp.asarray(b['x']), 'y': jnp.asarray(b['y'])}
    out[T] = jax.jit(jax.value_and_grad(lambda p, b=batch: bptt.bptt_losses(nets, p, b, None, c)[0]))(params)
  assert (np.asarray(make_source(c.data, 0).get_batch('train', 0, 0, 4)['x'])[:, :10] == -1).all()  # padding
  np.testing.assert_allclose(out[16][0], out[6][0], rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), out[16][1], out[6][1])
