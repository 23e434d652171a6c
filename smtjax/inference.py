"""Inference with a trained SMT model (method.md §7): read, write, teacher-only and RNN-only use.

Every function is batched and jitted (`nets` and the lengths are static arguments) and every loop over
time is a `jax.lax.scan`. Conventions (method.md §2): x_t in [0, V), -1 = padding; y_t is predicted after
reading x_0..x_t, -1 = no target. Losses are cross-entropies in nats per target token.

Scoring (each returns {'ce', 'valid', 'correct'}, arrays of one shape; ce is 0 where not valid):

- `read(nets, params, x, y, read_len, eval_len)` -> [B, eval_len]. The teacher encodes the prefix
  x[:, :read_len] into r_0; the RNN then reads the true tokens x[:, read_len:], r_j = U(r_{j-1},
  x[read_len+j-1]), and rollout position j = 0..eval_len-1 (the number of RNN steps taken) scores the
  readout of r_j on y[:, read_len-1+j]. Position 0 is the encoder's memory itself; the loss as a function of
  j shows drift. These are the public code's `loss_eval` positions (eval_len scored memories, targets the
  next inputs); with read_len + eval_len = T + 1 the last one is y[T-1] (the only target of e.g. retrieval).
- `teacher_scores(nets, params, x, y, read_len)` -> [B, T]: the teacher decoder's prediction of y_t from
  the encoder memory of x_0..x_t (one prefix pass for a causal encoder; for a bidirectional encoder the
  memory of the last `read_len` tokens, all windows encoded in one batched call).
- `rnn_only(nets, params, x, y)` -> [B, T]: the RNN from its initial memory over the whole sequence.

Generation (tokens [B, length]; temperature 0 = argmax; reproducible from rng):

- `write(nets, params, prompt, length, temperature, rng)`: encode the prompt, then sample from the
  readout and feed each token back through the RNN.
- `teacher_generate(nets, params, prompt, length, read_len, temperature, rng)`: teacher only; every step
  re-encodes a rolling buffer of the last `read_len` tokens and samples from the decoder.
- `rnn_generate(nets, params, batch_size, length, temperature, rng, prompt=None)`: RNN only, from the
  initial memory (the RNN first reads `prompt` when one is given).

Loading a trained run and scoring or sampling a workdir: `smtjax.runs`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from smtjax import losses
from smtjax.errors import ConfigError
from smtjax.models import Networks
from smtjax.windows import sliding_windows

# ------------------------------------------------------------------------------------------- scoring

def _scores(logits, y):
  ce, valid = losses.token_cross_entropy(logits, y)
  correct = (jnp.argmax(logits, axis=-1) == y) & valid
  return {'ce': ce, 'valid': valid, 'correct': correct}


def teacher_logits(nets: Networks, params, mem_BxKxD):
  """The teacher decoder's next-target logits from a memory alone [B, V] (always params['decoder'],
  never the DMT readout copy)."""
  return nets.decode(params, mem_BxKxD, jnp.zeros((mem_BxKxD.shape[0], 0), jnp.int32))[:, 0]


def check_lengths(seq_len: int, read_len: int, eval_len: int):
  """ConfigError unless 1 <= read_len, 1 <= eval_len and read_len + eval_len <= seq_len + 1 (the last scored
  target is y[read_len + eval_len - 2])."""
  if not isinstance(read_len, (int, np.integer)) or read_len < 1:
    raise ConfigError(f'read_len must be an integer >= 1 (the teacher encodes at least one token), got {read_len!r}')
  if not isinstance(eval_len, (int, np.integer)) or eval_len < 1:
    raise ConfigError(f'eval_len must be an integer >= 1 (the number of scored positions), got {eval_len!r}')
  if read_len + eval_len > seq_len + 1:
    raise ConfigError(f'read_len + eval_len = {read_len} + {eval_len} = {read_len + eval_len} reaches past the '
                      f'sequence (T = {seq_len}); use read_len + eval_len <= T + 1 = {seq_len + 1}')


@functools.partial(jax.jit, static_argnames=('nets', 'read_len', 'eval_len'))
def read(nets: Networks, params, x, y, read_len: int, eval_len: int) -> dict:
  """Teacher-forced RNN evaluation (see the module docstring): {'ce', 'valid', 'correct'} [B, eval_len];
  entry j scores y[:, read_len-1+j] from the RNN memory after j steps on the true tokens."""
  check_lengths(x.shape[1], read_len, eval_len)
  mem0 = nets.encode(params, x[:, :read_len])
  mems = nets.rollout(params, mem0, x[:, read_len:read_len + eval_len - 1])  # [B, eval_len - 1, K, D]
  mems = jnp.concatenate([mem0[:, None], mems], axis=1)
  logits = nets.readout_all(params, mems)
  return _scores(logits, y[:, read_len - 1:read_len - 1 + eval_len])


@functools.partial(jax.jit, static_argnames=('nets', 'read_len', 'chunk'))
def teacher_scores(nets: Networks, params, x, y, read_len: int | None = None, chunk: int = 0) -> dict:
  """The teacher's prediction of y_t from the encoder memory of x_0..x_t: {'ce', 'valid', 'correct'} [B, T].

  Causal encoder: `nets.prefix_memories` (one pass; `read_len` is ignored, the encoder's own
  attn_window applies). Bidirectional encoder: the memory of the last `read_len` tokens x[t-read_len+1..t]
  (left-padded with -1 near the start; default read_len = T), every window stacked along the batch in one
  encoder call, or in groups of `chunk` time positions (lax.map) when chunk > 0 to bound memory.
  """
  B, T = x.shape
  if nets.cfg.encoder_attention == 'causal':
    mems = nets.prefix_memories(params, x)[:, 1:]  # [B, T, K, D]
  else:
    L = T if read_len is None else read_len
    if L < 1:
      raise ConfigError(f'read_len must be >= 1, got {L}')
    win = jnp.swapaxes(sliding_windows(x, L), 0, 1)  # [T, B, L]
    if chunk > 0:
      mems = jax.lax.map(lambda w: nets.encode(params, w), win, batch_size=chunk)  # [T, B, K, D]
    else:
      mems = nets.encode(params, win.reshape(T * B, L)).reshape((T, B) + (nets.num_mem_tokens, nets.mem_dim))
    mems = jnp.swapaxes(mems, 0, 1)
  logits = teacher_logits(nets, params, mems.reshape((B * T,) + mems.shape[2:])).reshape(B, T, -1)
  return _scores(logits, y)


@functools.partial(jax.jit, static_argnames=('nets',))
def rnn_only(nets: Networks, params, x, y) -> dict:
  """The RNN from `nets.initial_memory` over the whole sequence: {'ce', 'valid', 'correct'} [B, T]."""
  mem0 = nets.initial_memory(params, x.shape[0])
  logits = nets.readout_all(params, nets.rollout(params, mem0, x))
  return _scores(logits, y)


@functools.partial(jax.jit, static_argnames=('nets',))
def reference_scores(nets: Networks, params, x, y) -> dict:
  """The plain-Transformer reference's prediction of y_t from x_0..x_t: {'ce', 'valid', 'correct'} [B, T]."""
  return _scores(nets.reference_logits(params, x), y)


# ---------------------------------------------------------------------------------------- generation

def _sample(logits_BxV, temperature, rng):
  """A token per row: categorical at `temperature` (a traced scalar), argmax where temperature <= 0."""
  t = jnp.asarray(temperature, jnp.float32)
  drawn = jax.random.categorical(rng, logits_BxV / jnp.maximum(t, 1e-6), axis=-1)
  return jnp.where(t > 0, drawn, jnp.argmax(logits_BxV, axis=-1)).astype(jnp.int32)


def _rnn_sample_loop(nets: Networks, params, mem0, length: int, temperature, rng):
  """Sample from the readout, feed the token to the RNN, `length` times (lax.scan): tokens [B, length]."""
  def body(mem, key):
    tok = _sample(nets.readout(params, mem), temperature, key)
    return nets.step(params, mem, tok), tok

  _, toks = jax.lax.scan(body, mem0, jax.random.split(rng, length))
  return jnp.swapaxes(toks, 0, 1)


@functools.partial(jax.jit, static_argnames=('nets', 'length'))
def write(nets: Networks, params, prompt, length: int, temperature, rng):
  """The teacher encodes `prompt` [B, P] (-1 = padding), then the RNN generates `length` tokens [B, length],
  each sampled from its readout at `temperature` (0 = argmax) and fed back."""
  return _rnn_sample_loop(nets, params, nets.encode(params, prompt), length, temperature, rng)


@functools.partial(jax.jit, static_argnames=('nets', 'batch_size', 'length'))
def rnn_generate(nets: Networks, params, batch_size: int, length: int, temperature, rng, prompt=None):
  """RNN-only sampling from `nets.initial_memory`: tokens [batch_size, length]. With `prompt` [B, P] the RNN
  first reads the prompt from the initial memory (no teacher anywhere)."""
  mem = nets.initial_memory(params, batch_size)
  if prompt is not None:
    mem = nets.rollout(params, mem, prompt)[:, -1] if prompt.shape[1] else mem
  return _rnn_sample_loop(nets, params, mem, length, temperature, rng)


@functools.partial(jax.jit, static_argnames=('nets', 'length', 'read_len'))
def teacher_generate(nets: Networks, params, prompt, length: int, read_len: int, temperature, rng):
  """Teacher-only generation: each step encodes the last `read_len` tokens (a rolling buffer, left-padded
  with -1 while shorter) and samples the next token from the decoder's memory-only prediction. [B, length]."""
  B, P = prompt.shape
  if read_len < 1:
    raise ConfigError(f'read_len must be >= 1, got {read_len}')
  buf = jnp.concatenate([jnp.full((B, read_len), -1, jnp.int32), prompt.astype(jnp.int32)], axis=1)[:, -read_len:]

  def body(buf, key):
    tok = _sample(teacher_logits(nets, params, nets.encode(params, buf)), temperature, key)
    return jnp.concatenate([buf[:, 1:], tok[:, None]], axis=1), tok

  _, toks = jax.lax.scan(body, buf, jax.random.split(rng, length))
  return jnp.swapaxes(toks, 0, 1)
