"""Run level: load a trained run from its workdir, score it on held-out data, and sample from it.

- `load_run(workdir)` -> (config, params, nets, source) of a trained run (latest checkpoint);
- `evaluate_params(...)` / `evaluate_workdir(workdir, ...)` -> the eval.json dictionary (read, teacher and
  RNN-only scores, loss by rollout position; see `smtjax.inference` for the definitions), written with a
  plot by `evaluate_workdir`;
- `sample_workdir(workdir, mode, ...)` -> samples.txt or samples.png.

Used by experiments/evaluate.py, experiments/sample.py, the studies and the notebooks.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from smtjax import config as config_lib
from smtjax import inference, plotting, train
from smtjax import workdir as workdir_lib
from smtjax.data import make_source, visualize
from smtjax.errors import ConfigError
from smtjax.evaluation import EvalSpec, Evaluator, summarize
from smtjax.models import Networks


def default_read_len(config) -> int:
  """config.evaluate.read_len, else smt.context for window-mode runs (when 0 < context < T), else T // 2."""
  T = config.data.seq_len
  if config.evaluate.read_len:
    return int(config.evaluate.read_len)
  if config.smt.mode == 'window' and 0 < config.smt.context < T:
    return int(config.smt.context)
  return max(1, T // 2)


def resolve_lengths(config, read_len: int | None = None, eval_len: int | None = None) -> tuple[int, int]:
  """(read_len, eval_len) from the arguments, config.evaluate.*, or the defaults (eval_len: every position to
  the end of the sequence); validated against T (ConfigError with the reason)."""
  T = config.data.seq_len
  read_len = default_read_len(config) if read_len is None else int(read_len)
  if eval_len is None:
    eval_len = int(config.evaluate.eval_len) if config.evaluate.eval_len else T - read_len + 1
  inference.check_lengths(T, read_len, int(eval_len))
  return read_len, int(eval_len)


def auto_teacher_chunk(batch_size: int, read_len: int, tokens_per_call: int = 1 << 19) -> int:
  """Time positions per encoder call for a bidirectional teacher: about `tokens_per_call` window tokens
  (B * chunk * read_len) per call, so the published scale (B=128, read_len=256) needs no more than a few GB."""
  return max(1, tokens_per_call // max(1, batch_size * read_len))


def evaluate_params(nets: Networks, params, config, source, num_batches: int, read_len: int, eval_len: int,
                    teacher_chunk: int | None = None) -> dict:
  """Scores `num_batches` held-out 'test' batches with `evaluation.Evaluator`; returns the eval.json
  dictionary (NaN where no target). `teacher_chunk`: see `inference.teacher_scores` (None =
  `auto_teacher_chunk`; 0 = every window in one call)."""
  T = config.data.seq_len
  inference.check_lengths(T, read_len, eval_len)
  causal = config.model.encoder_attention == 'causal'
  if teacher_chunk is None:
    teacher_chunk = auto_teacher_chunk(config.batch_size, read_len)
  if teacher_chunk >= T or causal:
    teacher_chunk = 0
  spec = EvalSpec(teacher=True, read_len=read_len, eval_len=eval_len, teacher_chunk=teacher_chunk)
  run = config_lib.Run.of(config, jax.device_count())
  totals = Evaluator(run, nets, spec).totals(params, source, num_batches)
  out = summarize(totals)
  for k in ('rnn_loss', 'teacher_loss', 'rnn_only_loss', 'teacher_loss_read_targets'):
    out[k + '_bits'] = out[k] / math.log(2)
  out.update(
      read_len=read_len, eval_len=eval_len, seq_len=T, num_sequences=totals['num_sequences'], num_batches=num_batches,
      encoder_attention=config.model.encoder_attention,
      teacher='causal prefix memory of x_0..x_t' if causal else f'bidirectional memory of the last {read_len} tokens',
      positions='entry j of *_per_position scores y[read_len-1+j] from the RNN memory after j steps on '
                'x[read_len : read_len+j] (j = 0: the encoder memory of x[:read_len])',
      units='nats per target token; *_bits = nats / ln 2',
  )
  return out


def load_run(workdir: str, step: int | None = None):
  """(config, params, nets, source) of a trained run: its saved config, the latest (or `step`) checkpoint's
  parameters, its networks (initial memory resolved by method) and its data source."""
  config, params = train.load_params(workdir, step=step)
  nets = Networks.from_config(config)
  return config, params, nets, make_source(config.data, config.seed)


def load_rnn_run(workdir: str):
  """`load_run` of a run that has an RNN and a teacher (every method's but the plain-Transformer reference's,
  whose held-out scores are its training evaluations: transformer_loss / transformer_accuracy in metrics.jsonl)."""
  out = load_run(workdir)
  if out[0].method == 'transformer':
    raise ConfigError(f'{workdir} is a plain-Transformer reference run (config.method=\'transformer\'): it has '
                      'no RNN or memory to read, write or sample; its scores are transformer_accuracy and '
                      'transformer_loss in its metrics.jsonl')
  return out


def eval_filename(config, seq_len: int | None = None) -> str:
  """eval.json, or eval_T<seq_len>.json for a length other than the run's training length."""
  return 'eval.json' if seq_len in (None, config.data.seq_len) else f'eval_T{int(seq_len)}.json'


def at_seq_len(config, seq_len: int):
  """A trained run's config scoring sequences of length seq_len (synthetic tasks generate any length):
  data.seq_len replaced, evaluate.read_len / eval_len left to their defaults for that length."""
  c = config.copy_and_resolve_references()
  c.data.seq_len = int(seq_len)
  return c


def evaluate_workdir(workdir: str, num_batches: int | None = None, read_len: int | None = None,
                     eval_len: int | None = None, teacher_chunk: int | None = None, write_files: bool = True,
                     seq_len: int | None = None) -> dict:
  """Loads workdir's config and latest checkpoint, scores held-out batches (`evaluate_params`) and writes
  workdir/eval.json and workdir/eval_loss_by_position.png. Returns the result (NaN where no target).

  `seq_len`: score sequences of this length instead of the training length (length generalization; the
  data source is rebuilt with data.seq_len overridden). The RNN reads the whole longer sequence; a causal
  teacher scores it from its prefix memories (rotary positions it never saw in training), one with
  model.attn_window > 0 sees only its window. Files: eval_T<seq_len>.json and eval_T<seq_len>_loss_by_position.png.
  """
  config, params, nets, source = load_rnn_run(workdir)
  if seq_len is not None and seq_len != config.data.seq_len:
    if int(seq_len) < 2:
      raise ConfigError(f'seq_len must be an integer >= 2, got {seq_len}')
    trained_len = config.data.seq_len
    config = at_seq_len(config, seq_len)
    source = make_source(config.data, config.seed)
  else:
    trained_len = config.data.seq_len
  read_len, eval_len = resolve_lengths(config, read_len, eval_len)
  num_batches = int(num_batches or config.evaluate.num_batches)
  if num_batches < 1:
    raise ConfigError(f'num_batches must be >= 1, got {num_batches}')
  result = evaluate_params(nets, params, config, source, num_batches, read_len, eval_len, teacher_chunk)
  result.update(trained_seq_len=trained_len, teacher_window=int(config.model.attn_window))
  if write_files:
    name = 'eval.json' if trained_len == config.data.seq_len else f'eval_T{config.data.seq_len}.json'
    workdir_lib.write_json(epath.Path(workdir) / name, result, sort_keys=True)
    plotting.loss_by_position(workdir_lib.json_safe(result),
                              epath.Path(workdir) / name.replace('.json', '_loss_by_position.png'),
                              title=f'{config.data.name}: read {read_len}, score {eval_len} positions')
  return result


MODES = ('rnn', 'teacher', 'rnn_only')


def sample_workdir(workdir: str, mode: str = 'rnn', num: int | None = None, temperature: float | None = None,
                   seed: int | None = None, prompt_len: int | None = None, length: int | None = None,
                   read_len: int | None = None, out: str | None = None) -> tuple[epath.Path, dict]:
  """Generates `num` continuations of held-out prompts (the first prompt_len tokens of test batch 0).

  mode 'rnn': the teacher encodes the prompt, the RNN writes (`write`); 'teacher': teacher-only with a
  rolling window of read_len tokens (`teacher_generate`; default: smt.context for window-mode runs, else
  T); 'rnn_only': the RNN reads the prompt from its initial memory and writes (`rnn_generate`; prompt_len
  may be 0). Writes workdir/samples.png (image data: prompt + continuation as one image per row) or
  workdir/samples.txt, unless `out` names another path. Same arguments -> identical output. Returns (path,
  {'prompt', 'tokens'}) with numpy arrays."""
  if mode not in MODES:
    raise ConfigError(f'mode must be one of {", ".join(MODES)}, got {mode!r}')
  if temperature is not None:
    config_lib.check_temperature(temperature, 'temperature')
  config, params, nets, source = load_rnn_run(workdir)
  s = config.sample
  T = config.data.seq_len
  num = int(num or s.num)
  temperature = float(s.temperature if temperature is None else temperature)
  seed = int(s.seed if seed is None else seed)
  if prompt_len is None:
    prompt_len = int(s.prompt_len) or default_read_len(config)
  if not 0 <= prompt_len <= T or (prompt_len == 0 and mode != 'rnn_only'):
    raise ConfigError(f'prompt_len must be in [{0 if mode == "rnn_only" else 1}, T={T}] for mode {mode!r}, '
                      f'got {prompt_len}')
  if length is None:
    length = int(s.length) or T - prompt_len
  if length < 1:
    raise ConfigError(f'length must be >= 1, got {length} (prompt_len {prompt_len} of T={T} leaves nothing; '
                     'pass length explicitly)')
  if num < 1:
    raise ConfigError(f'num must be >= 1, got {num}')
  prompt = np.asarray(source.get_batch('test', 0, 0, num)['x'][:, :prompt_len], np.int32)
  rng = jax.random.PRNGKey(seed)
  p = jnp.asarray(prompt)
  if mode == 'rnn':
    toks = inference.write(nets, params, p, length, temperature, rng)
  elif mode == 'teacher':
    if read_len is None:
      read_len = config.smt.context if config.smt.mode == 'window' and config.smt.context > 0 else T
    toks = inference.teacher_generate(nets, params, p, length, int(read_len), temperature, rng)
  else:
    toks = inference.rnn_generate(nets, params, num, length, temperature, rng, prompt=p)
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
