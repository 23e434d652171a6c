"""Inference with a trained SMT model (method.md §7): read, write, teacher-only and RNN-only use.

Every function is batched and jitted (`nets` and the lengths are static arguments) and every loop over
time is a `jax.lax.scan`. Conventions (method.md §2): x_t in [0, V), -1 = padding; y_t is predicted after
reading x_0..x_t, -1 = no target. Losses are cross-entropies in nats per target token.

Scoring (each returns {'ce', 'valid', 'correct'}, arrays of one shape; ce is 0 where not valid):

- `read(nets, params, x, y, read_len, eval_len)` -> [B, eval_len + 1]. The teacher encodes the prefix
  x[:, :read_len] into r_0; the RNN then reads the eval_len true tokens x[:, read_len:read_len+eval_len]
  (r_j = U(r_{j-1}, x[read_len+j-1])), and rollout position j = 0..eval_len (the number of RNN steps
  taken) scores the readout of r_j on y[:, read_len-1+j]. Position 0 is the encoder's memory itself; the
  loss as a function of j shows drift. This is the DMT rollout's indexing (smtjax/dmt.py), and with
  read_len + eval_len = T it scores up to the last target y[T-1] (the only target of e.g. retrieval).
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

Workdir level (used by experiments/evaluate.py and experiments/sample.py):
`evaluate_workdir(workdir, ...) -> dict` (writes eval.json and eval_loss_by_position.png) and
`sample_workdir(workdir, ...) -> path` (writes samples.txt or samples.png).
"""

from __future__ import annotations

import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from smtjax import losses
from smtjax import workdir as workdir_lib
from smtjax.models import Networks


# ------------------------------------------------------------------------------------------- scoring

def _scores(logits, y):
  ce, valid = losses.token_cross_entropy(logits, y)
  correct = (jnp.argmax(logits, axis=-1) == y) & valid
  return {'ce': ce, 'valid': valid, 'correct': correct}


def _teacher_logits(nets: Networks, params, mem_BxKxD):
  """The teacher decoder's next-target logits from a memory alone [B, V] (always params['decoder'],
  never the DMT readout copy)."""
  return nets.decode(params, mem_BxKxD, jnp.zeros((mem_BxKxD.shape[0], 0), jnp.int32))[:, 0]


def check_lengths(seq_len: int, read_len: int, eval_len: int):
  """Raises ValueError unless 1 <= read_len, 0 <= eval_len and read_len + eval_len <= seq_len."""
  if not isinstance(read_len, (int, np.integer)) or read_len < 1:
    raise ValueError(f'read_len must be an integer >= 1 (the teacher encodes at least one token), got {read_len!r}')
  if not isinstance(eval_len, (int, np.integer)) or eval_len < 0:
    raise ValueError(f'eval_len must be an integer >= 0, got {eval_len!r}')
  if read_len + eval_len > seq_len:
    raise ValueError(f'read_len + eval_len = {read_len} + {eval_len} = {read_len + eval_len} is longer than the '
                     f'sequence (T = {seq_len}); use read_len + eval_len <= {seq_len}')


@functools.partial(jax.jit, static_argnames=('nets', 'read_len', 'eval_len'))
def read(nets: Networks, params, x, y, read_len: int, eval_len: int) -> dict:
  """Teacher-forced RNN evaluation (see the module docstring): {'ce', 'valid', 'correct'} [B, eval_len+1];
  entry j scores y[:, read_len-1+j] from the RNN memory after j steps on the true tokens."""
  check_lengths(x.shape[1], read_len, eval_len)
  mem0 = nets.encode(params, x[:, :read_len])
  mems = nets.rollout(params, mem0, x[:, read_len:read_len + eval_len])  # [B, eval_len, K, D]
  mems = jnp.concatenate([mem0[:, None], mems], axis=1)
  logits = nets.readout_all(params, mems)
  return _scores(logits, y[:, read_len - 1:read_len + eval_len])


def _windows(x_BxT, length: int):
  """[B, T, length]: window t is x[:, t-length+1:t+1], left-padded with -1 before the sequence start."""
  B, T = x_BxT.shape
  padded = jnp.concatenate([jnp.full((B, length - 1), -1, x_BxT.dtype), x_BxT], axis=1)
  return padded[:, jnp.arange(T)[:, None] + jnp.arange(length)[None, :]]


@functools.partial(jax.jit, static_argnames=('nets', 'read_len', 'chunk'))
def teacher_scores(nets: Networks, params, x, y, read_len: int | None = None, chunk: int = 0) -> dict:
  """The teacher's prediction of y_t from the encoder memory of x_0..x_t: {'ce', 'valid', 'correct'} [B, T].

  Causal encoder: `nets.prefix_memories` (one pass; `read_len` is ignored, the encoder's own
  attn_window applies). Bidirectional encoder: the memory of the last `read_len` tokens x[t-read_len+1..t]
  (left-padded with -1 near the start; default read_len = T), every window stacked along the batch in one
  encoder call, or in groups of `chunk` time positions (lax.map) when chunk > 0 to bound memory.
  """
  B, T = x.shape
  if nets.encoder.attention == 'causal':
    mems = nets.prefix_memories(params, x)[:, 1:]  # [B, T, K, D]
  else:
    L = T if read_len is None else read_len
    if L < 1:
      raise ValueError(f'read_len must be >= 1, got {L}')
    win = jnp.swapaxes(_windows(x, L), 0, 1)  # [T, B, L]
    if chunk > 0:
      mems = jax.lax.map(lambda w: nets.encode(params, w), win, batch_size=chunk)  # [T, B, K, D]
    else:
      mems = nets.encode(params, win.reshape(T * B, L)).reshape((T, B) + (nets.num_mem_tokens, nets.mem_dim))
    mems = jnp.swapaxes(mems, 0, 1)
  logits = _teacher_logits(nets, params, mems.reshape((B * T,) + mems.shape[2:])).reshape(B, T, -1)
  return _scores(logits, y)


@functools.partial(jax.jit, static_argnames=('nets',))
def rnn_only(nets: Networks, params, x, y) -> dict:
  """The RNN from `nets.initial_memory` over the whole sequence: {'ce', 'valid', 'correct'} [B, T]."""
  mem0 = nets.initial_memory(params, x.shape[0])
  logits = nets.readout_all(params, nets.rollout(params, mem0, x))
  return _scores(logits, y)


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
    raise ValueError(f'read_len must be >= 1, got {read_len}')
  buf = jnp.concatenate([jnp.full((B, read_len), -1, jnp.int32), prompt.astype(jnp.int32)], axis=1)[:, -read_len:]

  def body(buf, key):
    tok = _sample(_teacher_logits(nets, params, nets.encode(params, buf)), temperature, key)
    return jnp.concatenate([buf[:, 1:], tok[:, None]], axis=1), tok

  _, toks = jax.lax.scan(body, buf, jax.random.split(rng, length))
  return jnp.swapaxes(toks, 0, 1)


# ----------------------------------------------------------------------------------- workdir level

def _encoder_attention(config) -> str:
  return config.model.encoder_attention


def default_read_len(config) -> int:
  """config.evaluate.read_len, else smt.context for window-mode runs (when 0 < context < T), else T // 2."""
  T = config.data.seq_len
  if config.evaluate.read_len:
    return int(config.evaluate.read_len)
  if config.smt.mode == 'window' and 0 < config.smt.context < T:
    return int(config.smt.context)
  return max(1, T // 2)


def resolve_lengths(config, read_len: int | None = None, eval_len: int | None = None) -> tuple[int, int]:
  """(read_len, eval_len) from the arguments, config.evaluate.*, or the defaults (eval_len: the rest of
  the sequence); validated against T (ValueError with the reason)."""
  T = config.data.seq_len
  read_len = default_read_len(config) if read_len is None else int(read_len)
  if eval_len is None:
    eval_len = int(config.evaluate.eval_len) if config.evaluate.eval_len else T - read_len
  check_lengths(T, read_len, int(eval_len))
  return read_len, int(eval_len)


def _mean(s: float, n: float) -> float:
  return float(s / n) if n > 0 else float('nan')


def _json_safe(v):
  if isinstance(v, float) and not math.isfinite(v):
    return None
  if isinstance(v, list):
    return [_json_safe(u) for u in v]
  if isinstance(v, dict):
    return {k: _json_safe(u) for k, u in v.items()}
  return v


def auto_teacher_chunk(batch_size: int, read_len: int, tokens_per_call: int = 1 << 19) -> int:
  """Time positions per encoder call for a bidirectional teacher: about `tokens_per_call` window tokens
  (B * chunk * read_len) per call, so the published scale (B=128, read_len=256) needs no more than a few GB."""
  return max(1, tokens_per_call // max(1, batch_size * read_len))


def evaluate_params(nets: Networks, params, config, source, num_batches: int, read_len: int, eval_len: int,
                    teacher_chunk: int | None = None) -> dict:
  """Scores `num_batches` held-out 'test' batches; returns the eval.json dictionary (NaN where no target).
  `teacher_chunk`: see `teacher_scores` (None = `auto_teacher_chunk`; 0 = every window in one call)."""
  from smtjax.data.pipeline import BatchIterator
  T = config.data.seq_len
  check_lengths(T, read_len, eval_len)
  if teacher_chunk is None:
    teacher_chunk = auto_teacher_chunk(config.batch_size, read_len)
  if teacher_chunk >= T or _encoder_attention(config) == 'causal':
    teacher_chunk = 0
  it = BatchIterator(source, 'test', config.batch_size, 0, 1, prefetch=0)
  P = eval_len + 1
  tot = {k: np.zeros(n, np.float64) for k, n in
         (('rnn_ce', P), ('rnn_n', P), ('rnn_hit', P), ('t_read_ce', P), ('t_read_n', P))}
  sums = {k: 0.0 for k in ('teacher_ce', 'teacher_n', 'teacher_hit', 'only_ce', 'only_n', 'only_hit')}
  num_seq = 0
  for _ in range(num_batches):
    batch = next(it)
    x, y = jnp.asarray(batch['x']), jnp.asarray(batch['y'])
    r = jax.device_get(read(nets, params, x, y, read_len, eval_len))
    t = jax.device_get(teacher_scores(nets, params, x, y, read_len, teacher_chunk))
    o = jax.device_get(rnn_only(nets, params, x, y))
    tot['rnn_ce'] += r['ce'].sum(0)
    tot['rnn_n'] += r['valid'].sum(0)
    tot['rnn_hit'] += r['correct'].sum(0)
    tot['t_read_ce'] += t['ce'][:, read_len - 1:read_len + eval_len].sum(0)
    tot['t_read_n'] += t['valid'][:, read_len - 1:read_len + eval_len].sum(0)
    for name, s in (('teacher', t), ('only', o)):
      sums[f'{name}_ce'] += float(s['ce'].sum())
      sums[f'{name}_n'] += float(s['valid'].sum())
      sums[f'{name}_hit'] += float(s['correct'].sum())
    num_seq += x.shape[0]
  it.close()
  n_rnn = tot['rnn_n'].sum()
  out = {
      'rnn_loss': _mean(tot['rnn_ce'].sum(), n_rnn),
      'teacher_loss': _mean(sums['teacher_ce'], sums['teacher_n']),
      'rnn_only_loss': _mean(sums['only_ce'], sums['only_n']),
      'rnn_accuracy': _mean(tot['rnn_hit'].sum(), n_rnn),
      'teacher_accuracy': _mean(sums['teacher_hit'], sums['teacher_n']),
      'rnn_only_accuracy': _mean(sums['only_hit'], sums['only_n']),
      # the teacher on exactly the targets `read` scores (y[read_len-1 : read_len+eval_len])
      'teacher_loss_read_targets': _mean(tot['t_read_ce'].sum(), tot['t_read_n'].sum()),
      'rnn_loss_per_position': [_mean(c, n) for c, n in zip(tot['rnn_ce'], tot['rnn_n'])],
      'teacher_loss_per_position': [_mean(c, n) for c, n in zip(tot['t_read_ce'], tot['t_read_n'])],
      'num_targets_per_position': [int(n) for n in tot['rnn_n']],
  }
  for k in ('rnn_loss', 'teacher_loss', 'rnn_only_loss', 'teacher_loss_read_targets'):
    out[k + '_bits'] = out[k] / math.log(2)
  out.update(
      read_len=read_len, eval_len=eval_len, seq_len=T, num_sequences=num_seq, num_batches=num_batches,
      num_rnn_targets=int(n_rnn), num_teacher_targets=int(sums['teacher_n']),
      encoder_attention=_encoder_attention(config),
      teacher='causal prefix memory of x_0..x_t' if _encoder_attention(config) == 'causal'
      else f'bidirectional memory of the last {read_len} tokens',
      positions='entry j of *_per_position scores y[read_len-1+j] from the RNN memory after j steps on '
                'x[read_len : read_len+j] (j = 0: the encoder memory of x[:read_len])',
      units='nats per target token; *_bits = nats / ln 2',
  )
  return out


def plot_loss_by_position(result: dict, path, title: str = ''):
  """RNN loss vs rollout position (teacher loss on the same targets as a horizontal line) -> PNG."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  ys = np.array([np.nan if v is None else v for v in result['rnn_loss_per_position']], np.float64)
  fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
  ax.plot(np.arange(len(ys)), ys, marker='.' if len(ys) <= 64 else None, label='RNN (read)')
  for key, style, label in (('teacher_loss_read_targets', '--', 'teacher, same targets'),
                            ('teacher_loss', ':', 'teacher, all targets')):
    v = result.get(key)
    if v is not None and math.isfinite(v):
      ax.axhline(v, linestyle=style, color='k' if style == '--' else 'gray', label=f'{label} ({v:.3f})')
  ax.set_xlabel(f'rollout position j (RNN steps after reading {result["read_len"]} tokens)')
  ax.set_ylabel('cross-entropy (nats)')
  if title:
    ax.set_title(title)
  ax.legend(fontsize=8)
  fig.tight_layout()
  path = workdir_lib.save_figure(fig, path)
  plt.close(fig)
  return path


def load_run(workdir: str, step: int | None = None):
  """(config, params, nets, source) of a trained run: its saved config, the latest (or `step`) checkpoint's
  parameters, its networks (initial memory resolved by method) and its data source."""
  from smtjax import train
  from smtjax.data import make_source
  config, params = train.load_params(workdir, step=step)
  return config, params, Networks.from_config(config.model, _initial(config)), make_source(config.data, config.seed)


def evaluate_workdir(workdir: str, num_batches: int | None = None, read_len: int | None = None,
                     eval_len: int | None = None, teacher_chunk: int | None = None, write_files: bool = True) -> dict:
  """Loads workdir's config and latest checkpoint, scores held-out batches (`evaluate_params`) and writes
  workdir/eval.json and workdir/eval_loss_by_position.png. Returns the result (NaN where no target)."""
  config, params, nets, source = load_run(workdir)
  read_len, eval_len = resolve_lengths(config, read_len, eval_len)
  num_batches = int(num_batches or config.evaluate.num_batches)
  if num_batches < 1:
    raise ValueError(f'num_batches must be >= 1, got {num_batches}')
  result = evaluate_params(nets, params, config, source, num_batches, read_len, eval_len, teacher_chunk)
  if write_files:
    workdir_lib.write_text(epath.Path(workdir) / 'eval.json', json.dumps(_json_safe(result), indent=2, sort_keys=True))
    plot_loss_by_position(_json_safe(result), epath.Path(workdir) / 'eval_loss_by_position.png',
                          title=f'{config.data.name}: read {read_len}, roll out {eval_len}')
  return result


def _initial(config) -> str:
  from smtjax import config as config_lib
  return config_lib.initial_memory(config)


MODES = ('rnn', 'teacher', 'rnn_only')


def sample_workdir(workdir: str, mode: str = 'rnn', num: int | None = None, temperature: float | None = None,
                   seed: int | None = None, prompt_len: int | None = None, length: int | None = None,
                   read_len: int | None = None, out: str | None = None) -> tuple[epath.Path, dict]:
  """Generates `num` continuations of held-out prompts (the first prompt_len tokens of test batch 0).

  mode 'rnn': the teacher encodes the prompt, the RNN writes (`write`); 'teacher': teacher-only with a
  rolling window of read_len tokens (`teacher_generate`; default: smt.context for window-mode runs, else
  T); 'rnn_only': the RNN reads the prompt from its initial memory and writes (`rnn_generate`; prompt_len
  may be 0). Writes workdir/samples.png (image data: prompt + continuation as one image per row) or
  workdir/samples.txt, unless `out` names another path. Same arguments -> identical output.
  Returns (path, {'prompt', 'tokens'}) with numpy arrays.
  """
  from smtjax.data import visualize
  if mode not in MODES:
    raise ValueError(f'mode must be one of {", ".join(MODES)}, got {mode!r}')
  config, params, nets, source = load_run(workdir)
  s = config.sample
  T = config.data.seq_len
  num = int(num or s.num)
  temperature = float(s.temperature if temperature is None else temperature)
  seed = int(s.seed if seed is None else seed)
  if prompt_len is None:
    prompt_len = int(s.prompt_len) or default_read_len(config)
  if not 0 <= prompt_len <= T or (prompt_len == 0 and mode != 'rnn_only'):
    raise ValueError(f'prompt_len must be in [{0 if mode == "rnn_only" else 1}, T={T}] for mode {mode!r}, got {prompt_len}')
  if length is None:
    length = int(s.length) or T - prompt_len
  if length < 1:
    raise ValueError(f'length must be >= 1, got {length} (prompt_len {prompt_len} of T={T} leaves nothing; '
                     'pass length explicitly)')
  if num < 1:
    raise ValueError(f'num must be >= 1, got {num}')
  prompt = np.asarray(source.get_batch('test', 0, 0, num)['x'][:, :prompt_len], np.int32)
  rng = jax.random.PRNGKey(seed)
  p = jnp.asarray(prompt)
  if mode == 'rnn':
    toks = write(nets, params, p, length, temperature, rng)
  elif mode == 'teacher':
    if read_len is None:
      read_len = config.smt.context if config.smt.mode == 'window' and config.smt.context > 0 else T
    toks = teacher_generate(nets, params, p, length, int(read_len), temperature, rng)
  else:
    toks = rnn_generate(nets, params, num, length, temperature, rng, prompt=p)
  toks = np.asarray(jax.device_get(toks))
  info = source.info
  if info.kind == 'image' and info.image_shape is not None:
    path = epath.Path(out or epath.Path(workdir) / 'samples.png')
    visualize.save_image_grid(info, np.concatenate([prompt, toks], axis=1), path)
  else:
    path = epath.Path(out or epath.Path(workdir) / 'samples.txt')
    ptxt = visualize.batch_to_text(info, prompt) if prompt_len else [''] * num
    ctxt = visualize.batch_to_text(info, toks)
    head = (f'# {num} samples of {config.data.name}: mode={mode} temperature={temperature} seed={seed} '
            f'prompt_len={prompt_len} (held-out test batch 0) length={length}\n')
    body = ''.join(f'--- sample {i} ---\nprompt:       {a}\ncontinuation: {b}\n' for i, (a, b) in
                   enumerate(zip(ptxt, ctxt)))
    path.parent.mkdir(parents=True, exist_ok=True)
    workdir_lib.write_text(path, head + body)
  return path, {'prompt': prompt, 'tokens': toks}
