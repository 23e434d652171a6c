"""Golden tests: smtjax computes the public PyTorch SMT code's numbers (akarshkumar0101/smt, src/model.py with
x-transformers 2.18.5), through `smtjax.interop.torch`.

The fixture tests/golden/torch_tiny.npz was written by tools/golden/make_torch_golden.py (run by hand with
torch; see its docstring): the public Teacher and RNN at a tiny size (V=16, d=16, K=2, 2 heads of the public
width 64, depths 2/1/2) with fixed weights, a fixed batch, and the public functions' outputs in float32:
forward_smt, forward_dmt (published flags), forward_bptt, read_with_teacher_rnn, Teacher.teacher_readout,
gradients of their total losses for a few parameters, and two training steps of train_smt.py (its AdamW and
per-network gradient clipping, at a larger learning rate) with a few parameters after each. Nothing here
imports torch.

Errors are normwise: max|smtjax - public| / max|public| over an array (|a - b| / |b| for a scalar). Both sides
compute in float32 with different operation orders (and RMSNorm epsilons 1e-6 vs 1e-12 / float32 eps): the
tolerance is 1e-5, except 5e-5 for BPTT from a zero memory (BPTT_RTOL says why) and 1e-3 for the whole of a
weight matrix after end-to-end optimizer steps (ADAM_RTOL; test_optimizer_steps says why). `pytest -s` prints
the measured errors (`report`).
"""

from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from smtjax import bptt, dmt, inference, losses, optim, smt, train, variants
from smtjax import config as config_lib
from smtjax.interop import torch as interop
from smtjax.models import Networks

FIXTURE = pathlib.Path(__file__).parent / 'golden' / 'torch_tiny.npz'
RTOL = 1e-5
# BPTT starts from a zero memory: in the first step the memory tokens' residual stream is small (RMS ~0.1), where
# the RMSNorm epsilons differ visibly (smtjax x * rsqrt(mean(x^2) + 1e-6), x-transformers x / max(|x|, 1e-12) *
# sqrt(d)): 1.7e-5 relative at step 0, carried through the rollout (2.6e-5 at most). With smtjax's epsilon set
# to 1e-20 the same rollout agrees to 5.7e-7, so the gap is that epsilon alone, not a different function.
BPTT_RTOL = 5e-5
# Adam's first update of an element whose gradient is within a few eps of zero (test_optimizer_steps says why).
ADAM_RTOL = 1e-3
ERRORS: dict[str, float] = {}


def rel_err(ours, ref) -> float:
  ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
  assert ours.shape == ref.shape, (ours.shape, ref.shape)
  return float(np.max(np.abs(ours - ref)) / max(np.max(np.abs(ref)), 1e-30))


def check(name: str, ours, ref, rtol: float = RTOL):
  err = rel_err(ours, ref)
  ERRORS[name] = max(err, ERRORS.get(name, 0.0))
  assert err <= rtol, f'{name}: relative error {err:.3g} > {rtol:g}'


@pytest.fixture(scope='module', autouse=True)
def report():
  yield
  if ERRORS:
    print('\nmax relative error against the public PyTorch code:')
    for k, v in ERRORS.items():
      print(f'  {k:40s} {v:.2e}')


class Golden:
  def __init__(self):
    z = np.load(FIXTURE)
    self.a = {k: z[k] for k in z.files}
    self.hp = json.loads(str(self.a['hparams']))
    self.teacher_sd, self.rnn_sd = interop.split_prefixed(self.a)
    self.x = jnp.asarray(self.a['x'])
    self.y = jnp.asarray(self.a['y'])
    hp = self.hp
    # The fixture's RNN readout has its own weights (as after DMT): 'auto' finds it and adds params['readout'].
    self.params, self.model = interop.convert(self.teacher_sd, self.rnn_sd, num_heads=hp['n_heads'])
    self.config = interop.public_config(self.model, seq_len=hp['Tc'] + hp['Td'] + hp['Tf'], context=hp['Tc'],
                                        future=hp['Tf'], dtype='float32', readout=True)
    c = self.config
    c.dmt.context, c.dmt.rollout, c.dmt.every = hp['Tc'], hp['Td'], hp['k']
    c.dmt.coef_mem, c.dmt.coef_readout = hp['dmt_coef_dyn'], hp['dmt_coef_readout']
    self.nets = Networks.from_config(c)  # DMT: the encoder's initial memory
    self.smt_params = {k: self.params[k] for k in ('encoder', 'decoder', 'cell')}

  def __getitem__(self, k):
    return self.a[k]

  def grad_leaf(self, name: str, grad, rnn_only: bool = False):
    """(the torch gradient of parameter `name` mapped to smtjax's layout, the path of its smtjax leaf, the part
    of that leaf it fills: q, k and v share one kernel): the converter applied to state dicts that are zero but
    for `name` (without the norms' unit offset it is linear in each parameter)."""
    net, _, key = name.partition('.')

    def convert(value):
      sds = {n: {k: (v if 'inv_freq' in k else np.zeros(v.shape, np.float32)) for k, v in sd.items()}
             for n, sd in (('teacher', self.teacher_sd), ('rnn', self.rnn_sd))}
      sds[net][key] = np.asarray(value, np.float32)
      if rnn_only:
        return interop.convert(rnn=sds['rnn'], num_heads=self.hp['n_heads'], norm_unit_offset=False)[0]
      return interop.convert(sds['teacher'], sds['rnn'], num_heads=self.hp['n_heads'], readout=True,
                             norm_unit_offset=False)[0]

    flat = jax.tree_util.tree_flatten_with_path(convert(np.ones(np.shape(grad))))[0]
    found = [(tuple(p.key for p in path), v != 0) for path, v in flat if np.any(v)]
    assert len(found) == 1, (name, [p for p, _ in found])
    path, part = found[0]
    return _at(convert(grad), path)[part], path, part

  def param_leaf(self, name: str, value):
    """grad_leaf for a parameter's value: an RMSNorm gain g becomes smtjax's scale g + 1."""
    ref, path, part = self.grad_leaf(name, value)
    return (ref + 1.0 if path[-1] == 'scale' else ref), path, part


def _at(tree, path):
  for p in path:
    tree = tree[p]
  return tree


@pytest.fixture(scope='module')
def g():
  return Golden()


# ------------------------------------------------------------------------------------------- conversion

def test_converted_tree_matches_smtjax_networks(g):
  want = jax.eval_shape(g.nets.init, jax.random.PRNGKey(0))
  want['readout'] = want['decoder']
  got = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), g.params)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  assert jax.tree.leaves(got) == jax.tree.leaves(want)
  m = g.model
  assert (m['head_dim'], m['rotary_fraction'], m['gelu_exact'], m['share_embedding']) == (64, 0.5, True, True)
  published = variants.published('tinystories').model
  for k, v in {**interop.FIXED_MODEL, 'head_dim': m['head_dim'], 'rotary_fraction': m['rotary_fraction']}.items():
    assert published[k] == v, k


def test_readout_auto_detects_a_copy_of_the_teacher_decoder(g):
  """train_smt.py saves the RNN with a copy of the teacher's decoder: no separate readout then."""
  rnn = dict(g.rnn_sd)
  for k, v in g.teacher_sd.items():
    if k.startswith('decoder.') or k.startswith('to_logits.'):
      rnn[k] = v
  params, _ = interop.convert(g.teacher_sd, rnn, num_heads=2)
  assert sorted(params) == ['cell', 'decoder', 'encoder']


def test_unknown_parameters_are_refused(g):
  with pytest.raises(ValueError, match='no place for'):
    interop.convert({**g.teacher_sd, 'encoder.layers.0.1.qk_norm.weight': np.ones(4)}, num_heads=2)


# ------------------------------------------------------------------------------------------------- SMT

def _smt_batch(g):
  T = g.hp['Tc'] + g.hp['Tf']
  return {'x': g.x[:, :T], 'y': g.y[:, :T]}


def _smt_config(g):
  c = g.config.copy_and_resolve_references()
  c.method = 'smt'
  return c


def test_smt_memories(g):
  Tc, B = g.hp['Tc'], g.x.shape[0]
  check('smt m_t = E(x[0:Tc])', g.nets.encode(g.params, g.x[:, :Tc]).reshape(B, -1), g['smt.m_now'])
  check('smt m_t+1 = E(x[1:Tc+1])', g.nets.encode(g.params, g.x[:, 1:Tc + 1]).reshape(B, -1), g['smt.m_next'])
  m = jnp.asarray(g['smt.m_now']).reshape(B, g.hp['mem_tokens'], -1)
  check('smt U(m_t, x[Tc])', g.nets.step(g.params, m, g.x[:, Tc]).reshape(B, -1), g['smt.m_next_pred'])
  logits = g.nets.decode(g.params, m, g.x[:, Tc:Tc + g.hp['Tf'] - 1])
  check('smt decoder logits', logits, g['smt.logits'])


def test_smt_losses(g):
  total, m = smt.window_losses(g.nets, g.smt_params, _smt_batch(g), jax.random.PRNGKey(0), _smt_config(g))
  check('smt loss_dec', m['loss_dec'], g['smt.loss_decoder'])
  check('smt loss_dec0', m['loss_dec0'], g['smt.loss_decoder0'])
  check('smt loss_dyn', m['loss_dyn'], g['smt.loss_dyn'])
  check('smt loss_unif', m['loss_unif'], g['smt.loss_unif'])
  check('smt total loss', total, g['smt.loss'])


def test_smt_gradients(g):
  s = _smt_config(g)
  grads = jax.grad(lambda p: smt.window_losses(g.nets, p, _smt_batch(g), jax.random.PRNGKey(0), s)[0])(g.smt_params)
  names = [k[len('smt.grad.'):] for k in g.a if k.startswith('smt.grad.')]
  assert len(names) >= 2
  for name in names:
    ref, path, part = g.grad_leaf(name, g[f'smt.grad.{name}'])
    check(f'smt grad {name}', np.asarray(_at(grads, path))[part], ref)


def test_tanh_gelu_would_not_match(g):
  """The option is needed: with Flax's default (tanh) GELU the SMT loss misses the public one."""
  c = g.config.copy_and_resolve_references()
  c.model.gelu_exact = False
  nets = Networks.from_config(c)
  total, _ = smt.window_losses(nets, g.smt_params, _smt_batch(g), jax.random.PRNGKey(0), _smt_config(g))
  m_t = nets.encode(g.params, g.x[:, :g.hp['Tc']]).reshape(g.x.shape[0], -1)
  ERRORS['(tanh GELU) smt m_t'] = rel_err(m_t, g['smt.m_now'])
  ERRORS['(tanh GELU) smt total loss'] = rel_err(total, g['smt.loss'])
  assert ERRORS['(tanh GELU) smt m_t'] > 5 * RTOL


# ------------------------------------------------------------------------------------------- optimizer

def _opt_config(g, weight_decay_on: str = 'all'):
  """train_smt.py's optimizer as the fixture ran it: AdamW over every parameter (torch's eps 1e-8 is optax's
  default), the RNN's and the teacher's gradients clipped each to `clip`, a constant learning rate."""
  hp = g.hp
  assert hp['opt_eps'] == 1e-8 and hp['opt_lr_steps'] == [hp['opt_lr']] * hp['opt_steps']
  c = _smt_config(g)
  o = c.optim
  o.lr, o.b1, o.b2, o.weight_decay = hp['opt_lr'], hp['opt_betas'][0], hp['opt_betas'][1], hp['opt_wd']
  o.warmup_frac, o.schedule = 0.0, 'constant'
  o.grad_clip, o.clip_mode, o.weight_decay_on = hp['clip'], 'per_network', weight_decay_on
  return c


def _replace(tree, path, part, value):
  """A copy of `tree` whose leaf at `path` has `value` in its `part`."""
  if not path:
    leaf = np.array(tree)
    leaf[part] = value
    return jnp.asarray(leaf)
  return {**tree, path[0]: _replace(tree[path[0]], path[1:], part, value)}


def _opt_steps(g, config, torch_grads: bool = False) -> list[tuple]:
  """(loss, gradient norms per network, parameters after the step) for each of the fixture's steps. With
  `torch_grads` the fixture's parameters get the public code's gradients (opt.grad<step>.<name>) instead of
  smtjax's: the optimizer alone is compared."""
  tx, _ = optim.make_optimizer(config, config_lib.frozen_networks(config))
  params = jax.tree.map(jnp.asarray, g.smt_params)
  state = tx.init(params)
  loss_fn = lambda p: smt.window_losses(g.nets, p, _smt_batch(g), jax.random.PRNGKey(0), config)[0]
  out = []
  for i in range(g.hp['opt_steps']):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    if torch_grads:
      for name in _opt_names(g):
        ref, path, part = g.grad_leaf(name, g[f'opt.grad{i + 1}.{name}'])
        grads = _replace(grads, path, part, ref)
    norms = optim.network_norms(grads)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    out.append((loss, norms, params))
  return out


def _opt_names(g):
  names = [k[len('opt.step1.'):] for k in g.a if k.startswith('opt.step1.')]
  assert any(n.endswith('.g') for n in names) and any(not n.endswith('.g') for n in names)
  return names


def test_optimizer_matches_public_adamw(g):
  """smtjax's optimizer given the public code's gradients: train_smt.py's AdamW and clipping, two steps."""
  steps = _opt_steps(g, _opt_config(g), torch_grads=True)
  for i, (_, _, params) in enumerate(steps):
    for name in _opt_names(g):
      ref, path, part = g.param_leaf(name, g[f'opt.step{i + 1}.{name}'])
      check(f'opt step{i + 1} {name} (public gradients)', np.asarray(_at(params, path))[part], ref)
  # The teacher's gradient is clipped at both steps, the RNN's at neither: per-network clipping shows.
  assert np.all(g['opt.grad_norm_teacher'] > g.hp['clip']) and np.all(g['opt.grad_norm_rnn'] < g.hp['clip'])


def test_optimizer_steps(g):
  """Two train_smt.py steps end to end (smtjax's gradients): the loss and gradient norms each step starts from
  (step 2's loss is a function of every parameter after step 1), and the parameters after each step.

  Adam's first update is lr * g / (|g| + eps) elementwise (eps = 1e-8): where a gradient is within a few eps of
  zero it carries the gradients' float32 noise (here ~1e-8 absolute, 3e-6 of the largest) times about lr / eps.
  The two attention matrices have such elements (0 < |g| < 1e-7 at step 1: 3 in q, 1 in v) and agree to ~5e-4
  normwise (ADAM_RTOL); their other elements (|g| >= 100 eps or 0 at every step so far) to 1.2e-7 after step 1
  and 5e-6 after step 2 (whose gradients also carry step 1's difference), every other parameter to RTOL.
  Given the public gradients (test_optimizer_matches_public_adamw) all elements agree to RTOL."""
  steps = _opt_steps(g, _opt_config(g))
  assert len(steps) == g.hp['opt_steps'] == 2
  well = {}
  for i, (loss, norms, params) in enumerate(steps):
    check(f'opt step{i + 1} loss', loss, g['opt.loss'][i])
    check(f'opt step{i + 1} grad norm teacher', norms['teacher'], g['opt.grad_norm_teacher'][i])
    check(f'opt step{i + 1} grad norm rnn', norms['rnn'], g['opt.grad_norm_rnn'][i])
    for name in _opt_names(g):
      ref, path, part = g.param_leaf(name, g[f'opt.step{i + 1}.{name}'])
      ours = np.asarray(_at(params, path))[part]
      grad = g.grad_leaf(name, g[f'opt.grad{i + 1}.{name}'])[0]
      ill = (grad != 0) & (np.abs(grad) < 100 * g.hp['opt_eps'])  # exact zeros (absent tokens) are exact
      well[name] = well.get(name, True) & ~ill
      if well[name].all():
        check(f'opt step{i + 1} {name}', ours, ref)
      else:
        check(f'opt step{i + 1} {name} (all elements)', ours, ref, ADAM_RTOL)
        check(f'opt step{i + 1} {name} (|g| >= 100 eps or 0)', ours[well[name]], ref[well[name]])


def _step2_errors(g, config, label: str) -> dict[str, float]:
  """Relative error of every recorded parameter after two steps of `config`'s optimizer on the public gradients."""
  params = _opt_steps(g, config, torch_grads=True)[-1][2]
  errors = {}
  for name in _opt_names(g):
    ref, path, part = g.param_leaf(name, g[f'opt.step2.{name}'])
    errors[name] = ERRORS[f'({label}) opt step2 {name}'] = rel_err(np.asarray(_at(params, path))[part], ref)
  return errors


def test_decay_on_matrices_would_not_match(g):
  """The option is needed: with weight decay on matrices only (optax.adamw's usual mask) the norm gains miss
  the public ones (its AdamW decays every parameter, the gains toward 1)."""
  errors = _step2_errors(g, _opt_config(g, 'matrices'), 'decay on matrices')
  gains = [n for n in errors if n.endswith('.g')]
  assert gains and all(errors[n] > 2 * RTOL for n in gains), errors


def test_global_clipping_would_not_match(g):
  """The option is needed: one global clipping norm scales the RNN's gradient too (the public code clips the RNN
  and the teacher each on its own), which changes the RNN's second Adam step."""
  c = _opt_config(g)
  c.optim.clip_mode = 'global'
  errors = _step2_errors(g, c, 'global clipping')
  rnn = [n for n in errors if n.startswith('rnn.')]
  assert rnn and all(errors[n] > 2 * RTOL for n in rnn), errors


# ------------------------------------------------------------------------------------------------- DMT

def _dmt_pieces(g, params):
  """smtjax's DMT building blocks: teacher memories at steps 0, k, ..., Td, the rollout r_1..r_Td (one-step
  gradients), and the readout cross-entropy of r_s on y[Tc+s-1] for s = 0..Td (detached memories)."""
  hp = g.hp
  Tc, Td, k = hp['Tc'], hp['Td'], hp['k']
  enc = dmt.teacher_memories(g.nets, params, g.x, Tc, Td, k, prefix=False)  # [B, Td/k+1, K, D]
  mems = g.nets.rollout(params, enc[:, 0], g.x[:, Tc:Tc + Td], truncation=1, detach_initial=True)
  seen = jnp.concatenate([enc[:, :1], mems], axis=1)  # r_0..r_Td
  ce, _ = losses.token_cross_entropy(g.nets.readout_all(params, jax.lax.stop_gradient(seen)), g.y[:, Tc - 1:Tc + Td])
  return enc, seen, ce


def test_dmt_memories_and_per_step_terms(g):
  hp, B = g.hp, g.x.shape[0]
  Td, k = hp['Td'], hp['k']
  enc, seen, ce = _dmt_pieces(g, g.params)
  check('dmt encoder memories (steps 0,k,..,Td-k)', enc[:, :-1].reshape(B, Td // k, -1), g['dmt.z_enc'])
  check('dmt encoder memories (steps 0,k,..,Td)', enc.reshape(B, Td // k + 1, -1), g['dmt.z_enc_all'])
  check('dmt rollout r_0..r_Td', seen.reshape(B, Td + 1, -1), g['dmt.rollout'])
  mse = jnp.mean(jnp.square(seen[:, ::k] - enc), axis=(2, 3))  # steps 0, k, ..., Td
  check('dmt memory MSE per k-th step', mse[:, :-1], g['dmt.loss_dyn_'].reshape(B, Td // k, -1).mean(-1))
  check('dmt readout CE per step (0..Td-1)', ce[:, :Td], g['dmt.loss_readout_'])
  check('dmt readout CE per step (0..Td)', ce, g['dmt.readout_ce_all'])


def _public_dmt_objective(g, params):
  """forward_dmt's objective from smtjax pieces: 10 x MSE at steps 0, k, ..., Td-k (step 0 is the encoder's
  memory itself: zero) + the readout cross-entropy at steps 0..Td-1. (The decoder and uniformity terms are
  functions of the frozen teacher: no gradient reaches the RNN.)"""
  hp = g.hp
  enc, seen, ce = _dmt_pieces(g, params)
  dyn = jnp.mean(jnp.square(seen[:, :hp['Td']:hp['k']] - jax.lax.stop_gradient(enc[:, :-1])))
  readout = jnp.mean(ce[:, :hp['Td']])
  return hp['dmt_coef_dyn'] * dyn + hp['dmt_coef_readout'] * readout, (dyn, readout)


def test_dmt_losses(g):
  hp = g.hp
  total, m = dmt.dmt_losses(g.nets, g.params, {'x': g.x, 'y': g.y}, jax.random.PRNGKey(0), g.config)
  # The teacher-side terms forward_dmt computes (logged by smtjax, constants of the frozen teacher).
  check('dmt loss_decoder', m['loss_dec_teacher'], g['dmt.loss_decoder'])
  check('dmt loss_decoder0', m['loss_dec0_teacher'], g['dmt.loss_decoder0'])
  check('dmt loss_unif (whole Z-vectors)', m['loss_unif_teacher'], g['dmt.loss_unif'])
  # forward_dmt's trained terms, from smtjax's pieces.
  _, (dyn, readout) = _public_dmt_objective(g, g.params)
  check('dmt loss_dyn (public positions)', dyn, g['dmt.loss_dyn'])
  check('dmt loss_readout (public positions)', readout, g['dmt.loss_readout'])
  public_total = (hp['dmt_coef_dec'] * m['loss_dec_teacher'] + hp['dmt_coef_dyn'] * dyn
                  + hp['dmt_coef_unif'] * m['loss_unif_teacher'] + hp['dmt_coef_readout'] * readout)
  check('dmt total loss (public definition)', public_total, g['dmt.loss'])
  # smtjax's own trained terms (other positions: steps k..Td and readout 0..Td), from the public modules.
  k = hp['k']
  ref_mem = np.mean(np.square(g['dmt.rollout'][:, k::k] - g['dmt.z_enc_all'][:, 1:]))
  check('dmt smtjax loss_mem (steps k..Td)', m['loss_mem'], ref_mem)
  ref_readout = g['dmt.readout_ce_all'].mean()
  check('dmt smtjax loss_readout (steps 0..Td)', m['loss_readout'], ref_readout)
  check('dmt smtjax total', total, hp['dmt_coef_dyn'] * ref_mem + hp['dmt_coef_readout'] * ref_readout)


def test_dmt_gradients(g):
  grads = jax.grad(lambda p: _public_dmt_objective(g, p)[0])(g.params)
  names = [k[len('dmt.grad.'):] for k in g.a if k.startswith('dmt.grad.')]
  assert names
  for name in names:
    ref, path, part = g.grad_leaf(name, g[f'dmt.grad.{name}'])
    check(f'dmt grad {name}', np.asarray(_at(grads, path))[part], ref)


# ------------------------------------------------------------------------------------------------ BPTT

def test_bptt(g):
  T = g.hp['bptt_T']
  params, _ = interop.convert(rnn=g.rnn_sd, num_heads=g.hp['n_heads'])  # no teacher: the RNN's readout -> decoder
  c = g.config.copy_and_resolve_references()
  c.method = 'bptt'  # initial memory: zeros, as forward_bptt
  nets = Networks.from_config(c)
  batch = {'x': g.x[:, :T], 'y': g.y[:, :T]}
  mem0 = nets.initial_memory(params, g.x.shape[0])
  B = g.x.shape[0]
  check('bptt memories', nets.rollout(params, mem0, batch['x']).reshape(B, T, -1), g['bptt.m_rnn'], BPTT_RTOL)
  loss, _ = bptt.bptt_losses(nets, params, batch, None, c)
  check('bptt loss', loss, g['bptt.loss'], BPTT_RTOL)
  mems = nets.rollout(params, mem0, batch['x'])
  ce, _ = losses.token_cross_entropy(nets.readout_all(params, mems), batch['y'])
  check('bptt readout CE per step', ce, g['bptt.loss_readout_'], BPTT_RTOL)
  grads = jax.grad(lambda p: bptt.bptt_losses(nets, p, batch, None, c)[0])(params)
  for name in [k[len('bptt.grad.'):] for k in g.a if k.startswith('bptt.grad.')]:
    ref, path, part = g.grad_leaf(name, g[f'bptt.grad.{name}'], rnn_only=True)
    check(f'bptt grad {name}', np.asarray(_at(grads, path))[part], ref, BPTT_RTOL)


# --------------------------------------------------------------------------------------------- inference

def test_read_scores_the_public_positions(g):
  """read_with_teacher_rnn scores eval_len positions, r_j (j = 0..eval_len-1) on x[read_len+j]; so does
  inference.read (on y[read_len-1+j], the same targets)."""
  R, E = g.hp['read_len'], g.hp['eval_len']
  scores = inference.read(g.nets, g.params, g.x, g.y, R, E)
  assert scores['ce'].shape == g['read.loss_eval_'].shape == (g.x.shape[0], E)
  check('read CE per position', scores['ce'], g['read.loss_eval_'])
  check('read loss_eval', jnp.mean(scores['ce']), g['read.loss_eval'])


def test_teacher_readout(g):
  mem = g.nets.encode(g.params, g.x[:, :g.hp['Tc']])
  check('teacher_readout logits', inference.teacher_logits(g.nets, g.params, mem), g['teacher_readout.logits'])


def test_workdir_round_trip(g, tmp_path):
  """write_workdir -> train.load_params gives the same parameters, and they score as the public code does."""
  interop.write_workdir(tmp_path / 'run', g.params, g.config)
  config, params = train.load_params(tmp_path / 'run')
  assert config.method == 'dmt' and config.model.gelu_exact
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(g.params)):
    np.testing.assert_array_equal(np.asarray(a), b)
  scores = inference.read(Networks.from_config(config), params, g.x, g.y, g.hp['read_len'], g.hp['eval_len'])
  check('read CE after a workdir round trip', scores['ce'], g['read.loss_eval_'])


def test_import_command_reads_what_the_file_holds(g, tmp_path):
  """experiments.import_torch on an .npz of the public state dicts: the heads and window lengths come from the
  file's hyperparameters (said so), the parameters equal the converter's, and a file it cannot read is one
  line."""
  import subprocess
  import sys
  root = pathlib.Path(__file__).resolve().parents[1]
  r = subprocess.run([sys.executable, '-m', 'experiments.import_torch', f'--checkpoint={FIXTURE}',
                      f'--workdir={tmp_path / "run"}', '--dtype=float32'], cwd=root, capture_output=True, text=True,
                     timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'num_heads: 2 (from the file)' in r.stdout and 'context: 6 (from the file)' in r.stdout, r.stdout
  config, params = train.load_params(tmp_path / 'run')
  assert config.method == 'dmt' and config.data.seq_len == 14 and config.model.num_heads == 2
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(g.params), strict=True):
    np.testing.assert_array_equal(np.asarray(a), b)
  bad = tmp_path / 'bad.npz'
  bad.write_bytes(b'not a zip')
  r = subprocess.run([sys.executable, '-m', 'experiments.import_torch', f'--checkpoint={bad}',
                      f'--workdir={tmp_path / "bad"}'], cwd=root, capture_output=True, text=True, timeout=300)
  assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].startswith(f'error: {bad}:'), r.stderr[-2000:]
  assert 'Traceback' not in r.stderr and not (tmp_path / 'bad').exists()


def test_a_missing_checkpoint_file_is_named_before_torch_is_needed(tmp_path):
  """A --checkpoint path that is not a file: one line naming it (not that torch is missing, for a torch file's
  name), and no workdir written."""
  missing = tmp_path / 'runs' / 'checkpoint.pt'
  with pytest.raises(FileNotFoundError) as info:
    interop.load_public(missing)
  assert str(info.value) == f'{missing}: no such file'
  with pytest.raises(FileNotFoundError, match=r'no such file \(it is a directory\)$'):
    interop.load_public(tmp_path)
  import subprocess
  import sys
  root = pathlib.Path(__file__).resolve().parents[1]
  r = subprocess.run([sys.executable, '-m', 'experiments.import_torch', f'--checkpoint={missing}',
                      f'--workdir={tmp_path / "run"}'], cwd=root, capture_output=True, text=True, timeout=300)
  assert r.returncode == 1 and r.stderr.strip().splitlines()[-1] == f'error: {missing}: no such file', r.stderr[-2000:]
  assert 'Traceback' not in r.stderr and not (tmp_path / 'run').exists()


def test_a_converted_checkpoint_is_evaluated_sampled_and_fine_tuned(g, tmp_path):
  """The authors' checkpoint as an smtjax workdir (here on a synthetic task whose vocabulary fits the fixture's
  16 tokens): experiments.evaluate's and experiments.sample's functions read it, and DMT fine-tunes it."""
  from smtjax import runs
  c = interop.public_config(g.model, seq_len=12, context=6, future=4, dtype='float32')
  c.data.name, c.data.seq_len = 'retrieval', 12
  c.data.options = type(c.data.options)(dict(num_symbols=8, noise=0.0))
  c.batch_size, c.evaluate.num_batches, c.sample.num = 4, 1, 2
  interop.write_workdir(tmp_path / 'public', g.smt_params, c)
  result = runs.evaluate_workdir(str(tmp_path / 'public'), write_files=True)
  assert np.isfinite(result['rnn_loss']) and np.isfinite(result['teacher_loss'])
  path, out = runs.sample_workdir(str(tmp_path / 'public'), 'rnn', seed=0)
  assert path.exists() and out['tokens'].shape[0] == 2
  d = variants.dmt(c.copy_and_resolve_references(), context=6, rollout=4, every=2, lr=1e-4, batch_size=4, num_steps=2)
  d.eval_every = d.checkpoint_every = 2
  d.init_from = str(tmp_path / 'public')
  final = train.train_and_evaluate(d, str(tmp_path / 'dmt'))
  assert np.isfinite(final['loss_mem'])
  _, tuned = train.load_params(str(tmp_path / 'dmt'))
  jax.tree.map(np.testing.assert_array_equal, tuned['encoder'], g.smt_params['encoder'])  # the teacher stays
