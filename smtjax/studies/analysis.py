"""Analyses of trained runs: gradient reach against distance (BPTT vs SMT) and memory drift (SMT, DMT).

Gradients (the retrieval setting: one target, y[:, T-1], at the last step; examples whose last target
is missing (-1) are left out). Index d of every array is the distance d = T-1-t between input x_t and
that target, d = 0..T-1.

- `bptt_embedding_gradients`: the loss is the readout cross-entropy of y[T-1] from the RNN memory after
  rolling `nets.step` over all T inputs from `nets.initial_memory` (exactly what BPTT trains at that
  target, untruncated). Differentiated with respect to the RNN cell's embedding of each input
  e_t = cell_embed[x_t]: each step t gets its own additive perturbation of the cell's embedding table
  (zeros, so the function is unchanged) and the gradient at row x_t of step t's perturbation is dL/de_t,
  per example (lax.map over the batch). Also returned: dL/dm_t, the gradient with respect to an additive
  perturbation of the memory produced at step t (m_t = U(m_{t-1}, x_t) + p_t).
- `smt_embedding_gradients`: the SMT objective's decoder term for that target: cross-entropy of y[L-1]
  from the decoder's prediction from the memory alone (entry 0, the `loss_dec0` position) of the
  encoder's prefix memory E(x_0..x_{L-1}) (`Encoder.prefix_memories`, L = T by default), differentiated
  with respect to the encoder's token embeddings (the `tok_emb` input of the encoder). Needs a causal
  encoder. Tokens t >= L get exactly zero gradient.
- Reported per distance: the mean over examples of the per-example L2 norm of the gradient (over D, or
  over K*D for the memory gradient).

Drift (`drift`): the teacher encodes x[:R] (R = read_len); teacher memories T_n = memory of x[:R+n] for
n = 0..N in one pass (causal: prefix memories; bidirectional: the sliding windows x[n:n+R] stacked along
the batch in one encoder call; `dmt.teacher_memories`). Against n = 1..N:
- one_step_mse[n-1] = MSE(U(T_{n-1}, x[R+n-1]), T_n): the RNN always starts from the teacher's memory;
- rollout_mse[n-1] = MSE(r_n, T_n) with r_0 = T_0, r_n = U(r_{n-1}, x[R+n-1]) (`lax.scan`).
MSE = mean over batch, K and D (as `losses.dynamics_loss`). rollout_mse[0] == one_step_mse[0].

Workdir level: `gradients_workdir(workdir | smt_workdir + bptt_workdir)` -> gradients.json/.png,
`drift_workdir(workdir, compare_workdir=None)` -> drift.json/.png (see experiments/analyze.py).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from smtjax import dmt, inference, losses, plotting, runs
from smtjax import workdir as workdir_lib
from smtjax.data.pipeline import BatchIterator
from smtjax.errors import ConfigError
from smtjax.models import Encoder, Networks

# ---------------------------------------------------------------------------------------- gradients

def _last_target(y):
  """(targets [B] with -1 -> 0, valid [B]) of the last step."""
  t = y[:, -1]
  return jnp.maximum(t, 0), t >= 0


def _ce(logits_BxV, t_B):
  return -jnp.take_along_axis(jax.nn.log_softmax(logits_BxV, axis=-1), t_B[:, None], axis=-1)[:, 0]


def _masked_mean(v_BxT, valid_B):
  w = valid_B.astype(jnp.float32)
  return jnp.sum(v_BxT * w[:, None], axis=0) / jnp.maximum(jnp.sum(w), 1.0)


def _by_distance(a_T):
  """Index t -> index d = T-1-t."""
  return a_T[..., ::-1]


def _with_cell_embedding(params, table):
  cell = dict(params['cell'])
  cell['embed'] = dict(cell['embed'], embedding=table)
  return dict(params, cell=cell)


def bptt_example_gradients(nets: Networks, params, x_T, target, mem0_KxD):
  """One example: (||dL/de_t|| [T], ||dL/dm_t|| [T]) indexed by t, for L the readout cross-entropy of
  `target` after rolling all of x_T from mem0 (see the module docstring)."""
  table = params['cell']['embed']['embedding']
  T = x_T.shape[0]

  def loss(d_emb, d_mem):
    def body(mem, inp):
      x, de, dm = inp
      p = _with_cell_embedding(params, table + de)
      new = nets.step(p, mem[None], x[None])[0] + dm
      return new, None
    mem, _ = jax.lax.scan(body, mem0_KxD, (x_T, d_emb, d_mem))
    return _ce(nets.readout(params, mem[None]), target[None])[0]

  g_emb, g_mem = jax.grad(loss, argnums=(0, 1))(jnp.zeros((T,) + table.shape, jnp.float32),
                                                jnp.zeros((T,) + mem0_KxD.shape, jnp.float32))
  rows = g_emb[jnp.arange(T), jnp.maximum(x_T, 0)]  # [T, D]: dL/de_t (zero where x_t is padding)
  return jnp.linalg.norm(rows, axis=-1), jnp.sqrt(jnp.sum(g_mem ** 2, axis=(1, 2)))


@functools.partial(jax.jit, static_argnames=('nets', 'chunk'))
def bptt_embedding_gradients(nets: Networks, params, x, y, chunk: int = 8) -> dict:
  """Per-distance mean gradient norms of the BPTT readout loss at the last target: {'embedding',
  'memory'} [T] (index d = T-1-t) and 'per_example_embedding' [B, T] (index t). `chunk` examples at a
  time (lax.map), bounding memory to chunk * T * V * D floats."""
  target, valid = _last_target(y)
  mem0 = nets.initial_memory(params, x.shape[0])
  g_emb, g_mem = jax.lax.map(lambda a: bptt_example_gradients(nets, params, *a), (x, target, mem0),
                             batch_size=chunk)
  return {'embedding': _by_distance(_masked_mean(g_emb, valid)),
          'memory': _by_distance(_masked_mean(g_mem, valid)),
          'per_example_embedding': g_emb, 'valid': valid}


def smt_last_target_loss(nets: Networks, params, x, y, tok_emb, L: int | None = None):
  """Sum over examples of the cross-entropy of y[:, L-1] from the decoder on the prefix memory
  E(x[:, :L]) computed from the token embeddings `tok_emb` [B, T, D] (default L = T); examples whose
  target is -1 contribute 0."""
  T = x.shape[1]
  L = T if L is None else L
  mems = nets.encoder.apply({'params': params['encoder']}, x, tok_emb=tok_emb,
                            method=Encoder.prefix_memories).astype(jnp.float32)  # [B, T+1, K, D]
  logits = inference.teacher_logits(nets, params, mems[:, L])
  ce, _ = losses.token_cross_entropy(logits, y[:, L - 1])
  return jnp.sum(ce)


def encoder_token_embeddings(nets: Networks, params, x):
  """The encoder's token embeddings [B, T, D] (what `tok_emb` replaces)."""
  table = params['encoder']['embed']['embedding']
  return table[jnp.maximum(x, 0)].astype(nets.cfg.dtype)


@functools.partial(jax.jit, static_argnames=('nets', 'L'))
def smt_embedding_gradients(nets: Networks, params, x, y, L: int | None = None) -> dict:
  """Per-distance mean gradient norms of the SMT decoder loss of the last target (target y[L-1] from the
  prefix memory of x[:L], default L = T) w.r.t. the encoder's token embeddings: {'embedding'} [T]
  (index d = T-1-t), 'per_example_embedding' [B, T] (index t). Needs a causal encoder."""
  if nets.cfg.encoder_attention != 'causal':
    raise ConfigError("smt_embedding_gradients needs a causal encoder (model.encoder_attention='causal')")
  T = x.shape[1]
  L = T if L is None else L
  valid = y[:, L - 1] >= 0
  g = jax.grad(lambda e: smt_last_target_loss(nets, params, x, y, e, L))(encoder_token_embeddings(nets, params, x))
  norms = jnp.linalg.norm(g.astype(jnp.float32), axis=-1)  # per example: the loss is a sum over examples
  return {'embedding': _by_distance(_masked_mean(norms, valid)), 'per_example_embedding': norms, 'valid': valid}


# -------------------------------------------------------------------------------------------- drift

@functools.partial(jax.jit, static_argnames=('nets', 'read_len', 'num_steps'))
def drift(nets: Networks, params, x, read_len: int, num_steps: int) -> dict:
  """{'one_step_mse', 'rollout_mse'} [num_steps], entry n-1 for n = 1..num_steps (module docstring)."""
  inference.check_lengths(x.shape[1], read_len, num_steps)
  if num_steps < 1:
    raise ConfigError(f'num_steps must be >= 1, got {num_steps}')
  B, K, D = x.shape[0], nets.num_mem_tokens, nets.mem_dim
  causal = nets.cfg.encoder_attention == 'causal'
  teacher = dmt.teacher_memories(nets, params, x, read_len, num_steps, 1, prefix=causal)  # [B, N+1, K, D]
  inputs = x[:, read_len:read_len + num_steps]  # x[R+n-1] for n = 1..N
  one = nets.step(params, teacher[:, :-1].reshape(B * num_steps, K, D), inputs.reshape(B * num_steps))
  one = one.reshape(B, num_steps, K, D)
  roll = nets.rollout(params, teacher[:, 0], inputs)
  mse = lambda a: jnp.mean((a - teacher[:, 1:]) ** 2, axis=(0, 2, 3))
  return {'one_step_mse': mse(one), 'rollout_mse': mse(roll)}


# ------------------------------------------------------------------------------------ workdir level

def _batches(config, source, num_batches: int):
  it = BatchIterator(source, 'test', config.batch_size, 0, 1, prefetch=0)
  try:
    for _ in range(num_batches):
      b = next(it)
      yield jnp.asarray(b['x']), jnp.asarray(b['y'])
  finally:
    it.close()


def _tolist(a):
  return [None if not np.isfinite(v) else float(v) for v in np.asarray(a, np.float64)]


def gradients_params(nets: Networks, params, config, source, num_batches: int = 1, chunk: int = 8) -> dict:
  """Gradient norms by distance averaged over `num_batches` held-out batches (weighted by valid
  examples): 'bptt_embedding', 'bptt_memory' always, 'smt_embedding' with a causal encoder (else None)."""
  causal = nets.cfg.encoder_attention == 'causal'
  sums, n_valid = {}, 0.0
  for x, y in _batches(config, source, num_batches):
    b = jax.device_get(bptt_embedding_gradients(nets, params, x, y, chunk))
    n = float(np.sum(b['valid']))
    parts = {'bptt_embedding': b['embedding'], 'bptt_memory': b['memory']}
    if causal:
      parts['smt_embedding'] = jax.device_get(smt_embedding_gradients(nets, params, x, y))['embedding']
    for k, v in parts.items():
      sums[k] = sums.get(k, 0.0) + n * np.asarray(v, np.float64)
    n_valid += n
  out = {k: _tolist(v / max(n_valid, 1.0)) for k, v in sums.items()}
  out.setdefault('smt_embedding', None)
  out.update(num_examples=int(n_valid), seq_len=int(config.data.seq_len), method=config.method,
             encoder_attention=config.model.encoder_attention)
  return out


def _run_label(workdir, result):
  return f'{result["method"]} run ({epath.Path(workdir).name})'


DIFFERENTIATED = {
    'bptt_embedding': 'readout cross-entropy of y[T-1] after the RNN rolls all T inputs from its initial '
                      'memory, w.r.t. the cell embedding e_t of input x_t (per-step embedding-table perturbation)',
    'bptt_memory': 'the same loss w.r.t. an additive perturbation of the memory produced at step t',
    'smt_embedding': 'SMT decoder loss (entry 0, memory alone) of y[T-1] from the encoder prefix memory '
                     'E(x_0..x_{T-1}), w.r.t. the encoder token embedding of x_t',
    'index': 'entry d is distance d = T-1-t; value = mean over examples of the per-example L2 norm',
}


def gradients_workdir(workdir: str | None = None, smt_workdir: str | None = None, bptt_workdir: str | None = None,
                      out: str | None = None, num_batches: int = 1, chunk: int = 8) -> dict:
  """One workdir, or smt_workdir + bptt_workdir (the comparison): writes gradients.json and gradients.png
  into `out` (default: workdir, else smt_workdir). Returns {'runs': {workdir: result}, ...}."""
  dirs = [d for d in (workdir, smt_workdir, bptt_workdir) if d]
  if not dirs:
    raise ConfigError('give workdir, or smt_workdir and/or bptt_workdir')
  results, curves = {}, {}
  for d in dirs:
    config, params, nets, source = runs.load_run(d)
    r = gradients_params(nets, params, config, source, num_batches, chunk)
    results[d] = r
    name = _run_label(d, r)
    curves[f'{name}: RNN rollout (BPTT loss), input embedding'] = r['bptt_embedding']
    if r['smt_embedding'] is not None and d != bptt_workdir:
      curves[f'{name}: encoder (SMT loss), token embedding'] = r['smt_embedding']
  result = {'runs': results, 'differentiated': DIFFERENTIATED}
  out = out or dirs[0]
  out = epath.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  workdir_lib.write_json(out / 'gradients.json', result)
  plotting.gradients(curves, out / 'gradients.png', title='gradient norm vs distance to the target')
  return result


def drift_params(nets: Networks, params, config, source, num_batches: int, read_len: int, num_steps: int) -> dict:
  sums = {'one_step_mse': 0.0, 'rollout_mse': 0.0}
  for x, _ in _batches(config, source, num_batches):
    r = jax.device_get(drift(nets, params, x, read_len, num_steps))
    for k in sums:
      sums[k] = sums[k] + np.asarray(r[k], np.float64)
  out = {k: _tolist(v / num_batches) for k, v in sums.items()}
  out.update(n=list(range(1, num_steps + 1)), read_len=read_len, num_steps=num_steps, method=config.method,
             encoder_attention=config.model.encoder_attention, num_batches=num_batches)
  return out


def drift_workdir(workdir: str, compare_workdir: str | None = None, out: str | None = None,
                  num_batches: int = 1, read_len: int | None = None, num_steps: int | None = None) -> dict:
  """Drift of workdir's RNN (and compare_workdir's, e.g. before/after DMT, with the same lengths):
  writes drift.json and drift.png into `out` (default workdir). Defaults: read_len from the workdir's
  config (`runs.default_read_len`), num_steps the rest of the sequence."""
  results = {}
  for d in [workdir] + ([compare_workdir] if compare_workdir else []):
    config, params, nets, source = runs.load_run(d)
    if read_len is None:
      read_len = runs.default_read_len(config)
    if num_steps is None:
      num_steps = config.data.seq_len - read_len
    results[d] = drift_params(nets, params, config, source, num_batches, read_len, num_steps)
  result = {'runs': results, 'definition': {
      'one_step_mse': 'MSE(step(teacher memory at n-1, x[R+n-1]), teacher memory at n), entry n-1',
      'rollout_mse': 'MSE(RNN memory after n steps from the teacher memory of x[:R], teacher memory at n)',
      'teacher memory at n': 'memory of x[:R+n] (causal: prefix memory; bidirectional: window x[n:n+R])'}}
  out = out or workdir
  out = epath.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  workdir_lib.write_json(out / 'drift.json', result)
  plotting.drift({_run_label(d, r): r for d, r in results.items()}, out / 'drift.png',
             title=f'memory drift (read_len {read_len})')
  return result
