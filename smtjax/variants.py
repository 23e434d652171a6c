"""Building blocks for `configs/*.py`: base configs, named variants, and their composition.

A config file's `get_config(arg)` takes a variant string of comma-separated parts, applied left to right:

    configs/retrieval.py:small               one named variant
    configs/retrieval.py:small,gru,bptt      a size, then modifiers
    configs/retrieval.py:small,model.d_model=64,smt.coef_dyn=0.2   key=value overrides (existing fields only)

At most one part names a *size* (the variants that build the config from scratch: '', 'small', 'gpu', ...);
the others are *modifiers* that change a built config: the config file's own, then the common ones below.
Unknown names and fields raise ConfigError naming them and the known ones. This module depends on
smtjax.config only, so the library never reads configs/ and configs/ never reach into the library's
internals.
"""

from __future__ import annotations

import ast
from collections.abc import Callable

import ml_collections

from smtjax import config as config_lib
from smtjax.errors import ConfigError

Config = ml_collections.ConfigDict


# ------------------------------------------------------------------------------------------ synthetic

def synthetic(task: str, seq_len: int, vocab_size: int, **options) -> Config:
  """The CPU-sized parallel-mode SMT config of a synthetic task (method.md §10): d=64, K=2, depths 2."""
  c = config_lib.default_config()
  c.data.name = task
  c.data.seq_len = seq_len
  for k, v in options.items():
    c.data.options[k] = v
  c.model.vocab_size = vocab_size
  c.model.d_model = 64
  c.model.num_heads = 4
  c.model.num_mem_tokens = 2
  c.model.enc_depth = c.model.dec_depth = c.model.cell_depth = 2
  c.smt.mode = 'parallel'
  c.smt.future = seq_len  # sparse targets: decode to the end of the sequence
  c.optim.lr = 1e-3
  c.batch_size = 32
  c.num_steps = 3000
  c.log_every = 25
  c.eval_every = c.checkpoint_every = 500
  return c


def small(c: Config) -> Config:
  """A few minutes on 2 CPU cores: d=32, 2 heads, lr 3e-3, 1000 steps."""
  c.model.d_model = 32
  c.model.num_heads = 2
  c.optim.lr = 3e-3
  c.num_steps = 1000
  c.log_every = 20
  c.eval_every = c.checkpoint_every = 200
  return c


def gpu(c: Config) -> Config:
  """The paper's scale for synthetic tasks: d=256, 8 heads, K=8, depths 4/2/4, bf16, batch 64, 50k steps."""
  c.model.d_model = 256
  c.model.num_heads = 8
  c.model.num_mem_tokens = 8
  c.model.enc_depth = c.model.cell_depth = 4
  c.model.dec_depth = 2
  c.optim.lr = 3e-4
  c.batch_size = 64
  c.num_steps = 50000
  c.model.dtype = 'bfloat16'
  c.log_every = 100
  c.eval_every = c.checkpoint_every = 2000
  return c


def narrow_memory(c: Config, width: int) -> Config:
  """One memory token of width `width` (2 or 3: memory spaces that can be drawn)."""
  c.model.num_mem_tokens = 1
  c.model.mem_dim = width
  return c


# ------------------------------------------------------------------------------------------ real data

def published(name: str, seq_len: int = 320, context: int = 256, future: int = 64) -> Config:
  """The published SMT settings (method.md §8) for a real dataset: window mode, bidirectional encoder,
  d=256, K=16 (Z=4096), 8 heads of width 64, depths 8/4/8, AdamW 3e-4 (0.9, 0.95), wd 0.01, 1% warm-up then
  constant, batch 128, clipping 1.0 per network, 150k steps, bf16 computation."""
  c = config_lib.default_config()
  c.data.name = name
  c.data.seq_len = seq_len
  c.model.vocab_size = 256
  c.model.d_model = 256
  c.model.num_mem_tokens = 16
  c.model.num_heads = 8
  c.model.enc_depth = 8
  c.model.dec_depth = 4
  c.model.cell = 'transformer'
  c.model.cell_depth = 8
  c.model.encoder_attention = 'bidirectional'
  c.model.dtype = 'bfloat16'
  # The public networks (x-transformers Encoder/Decoder defaults): 64 features per head (8 heads: attention
  # width 512 inside d=256), rotary on half of each head, biases in the MLPs and the logits layer, a final
  # RMSNorm after the last block, one token embedding shared by the teacher's encoder and decoder.
  c.model.head_dim = 64
  c.model.rotary_fraction = 0.5
  c.model.use_bias = True
  c.model.final_norm = True
  c.model.share_embedding = True
  c.model.gelu_exact = True  # torch.nn.GELU(): erf
  c.model.residual_dtype = 'float32'  # torch.autocast: bfloat16 products, float32 residual stream and memories
  c.smt.mode = 'window'
  c.smt.context = context
  c.smt.future = future
  c.optim.clip_mode = 'per_network'  # the RNN's and the teacher's gradients each clipped to 1.0
  c.optim.lr = 3e-4
  c.optim.b1, c.optim.b2 = 0.9, 0.95
  c.optim.weight_decay = 0.01
  c.optim.weight_decay_on = 'all'  # torch.optim.AdamW over every parameter
  c.optim.warmup_frac = 0.01
  c.optim.schedule = 'constant'
  c.optim.grad_clip = 1.0
  c.batch_size = 128
  c.num_steps = 150_000
  c.log_every = 100
  c.eval_every = 5000
  c.checkpoint_every = 5000
  c.num_eval_batches = 16
  # Every option of the real sources exists here, so `--config.data.options.X=...` works under lock_config.
  c.data.options.cache_dir = ''  # '' = $SMTJAX_CACHE or ~/.cache/smtjax
  c.data.options.download = True  # fetch into the cache when data.path is '' and nothing is found
  c.data.options.download_timeout = 10.0  # seconds without a reply before a download fails
  return c


def small_real(c: Config, seq_len: int = 64, context: int = 48, future: int = 16) -> Config:
  """Shrinks a `published` config to a tiny float32 model for 2 CPU cores (minutes, not hours)."""
  c.data.seq_len = seq_len
  c.smt.context = context
  c.smt.future = future
  c.model.d_model = 64
  c.model.num_heads = 4
  c.model.head_dim = 0  # d_model / num_heads = 16 (the other public-architecture options stay)
  c.model.num_mem_tokens = 4
  c.model.enc_depth = c.model.dec_depth = c.model.cell_depth = 2
  c.model.dtype = 'float32'
  c.batch_size = 16
  c.num_steps = 300
  c.log_every = 20
  c.eval_every = c.checkpoint_every = 100
  c.num_eval_batches = 4
  c.optim.lr = 1e-3
  return c


def cpu_real(c: Config, seq_len: int = 128, batch_size: int = 16) -> Config:
  """A `published` config as the largest model that learns a real dataset within minutes on one CPU core: the
  public architecture's options at d=64 (4 heads of 16), K=4 memory tokens, depths 2/2/2, float32, parallel
  SMT (causal encoder: the RNN starts from its initial memory, every transition trained), 16 sampled
  transitions and 4 decoded memories per sequence with 8 future targets each, lr 2e-3, 10% of the training
  stream held out as a validation split. One step takes about 0.3-0.4 s on one core (docs/results.md)."""
  c = small_real(c, seq_len=seq_len, context=seq_len // 2, future=8)
  c.model.d_model, c.model.num_heads, c.model.head_dim, c.model.num_mem_tokens = 64, 4, 16, 4
  c.model.encoder_attention = 'causal'
  c.smt.mode = 'parallel'
  c.smt.num_transitions, c.smt.num_decoder_samples = 16, 4
  c.batch_size = batch_size
  c.optim.lr = 2e-3
  c.num_steps = 2000
  c.log_every, c.eval_every, c.checkpoint_every, c.num_eval_batches = 50, 500, 500, 4
  c.data.valid_fraction = 0.1
  return c


def real_data_sizes(published_fn: Callable[[], Config]) -> dict[str, Callable[[], Config]]:
  """The sizes of a real-data config file: '' (published), 'small' (a smoke test on 2 CPU cores), 'cpu' (the
  largest that learns on one CPU core in minutes: `cpu_real`), 'dmt' (the published DMT stage: T = Tc + 256 +
  64, k = 16) and 'small_dmt'."""
  return {
      '': published_fn,
      'small': lambda: small_real(published_fn()),
      'cpu': lambda: cpu_real(published_fn()),
      'dmt': lambda: dmt(published_fn(), context=None, rollout=256, every=16),
      'small_dmt': lambda: dmt(small_real(published_fn()), context=None, rollout=32, every=8, lr=3e-4,
                               batch_size=16, num_steps=200),
  }


# ------------------------------------------------------------------------------------------------ DMT

def dmt(c: Config, context: int | None, rollout: int, every: int, lr: float = 3e-5, batch_size: int = 32,
        num_steps: int = 1500) -> Config:
  """Turns an SMT config into DMT fine-tuning of its RNN (method.md §5/§8: lr 3e-5 with 1% warm-up and
  cosine decay, batch 32, 1.5k steps). The sequence grows to context + rollout + future for window-mode
  teachers; a parallel-mode teacher keeps its task's length. Set --config.init_from=SMT_WORKDIR.
  The objective is the published one, 10 x memory MSE + readout cross-entropy; the decoder and uniformity
  terms are computed on the teacher's memories and only logged (dmt.decoder_term / uniformity_term='rnn'
  trains them on the RNN's memories instead, an smtjax extension)."""
  c.method = 'dmt'
  c.dmt.decoder_term = c.dmt.uniformity_term = 'teacher'
  context = c.smt.context if context is None else context  # a window teacher encodes windows of its own length
  c.dmt.context, c.dmt.rollout, c.dmt.every = context, rollout, every
  if c.smt.mode == 'window':
    c.data.seq_len = context + rollout + c.smt.future
  c.optim.lr = lr
  c.optim.schedule = 'cosine'
  c.optim.warmup_frac = 0.01
  c.batch_size = batch_size
  c.num_steps = num_steps
  return c


def dmt_lengths(T: int, max_every: int = 16) -> tuple[int, int, int]:
  """(Tc, Td, k) for a parallel-mode teacher on length T: k a power of two near T/8 (at most max_every),
  Td the largest multiple of k below T, Tc = T - Td >= 1 (the rollout reaches the end of the sequence)."""
  k = 1
  while k * 2 <= min(max_every, max(1, T // 8)):
    k *= 2
  Td = ((T - 1) // k) * k
  return T - Td, Td, k


def parallel_dmt(c: Config) -> Config:
  """DMT after a parallel-mode SMT config at the same length: rollout to the end of the sequence
  (`dmt_lengths`), a third of SMT's learning rate, a fifth of its steps."""
  Tc, Td, k = dmt_lengths(c.data.seq_len)
  return dmt(c, context=Tc, rollout=Td, every=k, lr=c.optim.lr / 3, batch_size=c.batch_size,
             num_steps=max(1, c.num_steps // 5))


# ------------------------------------------------------------------------------------------- composing

def _common_dmt(c: Config) -> Config:
  return parallel_dmt(c) if c.smt.mode == 'parallel' else dmt(c, context=None, rollout=256, every=16)


def _set(field: str, value) -> Callable[[Config], Config]:
  def apply(c):
    override(c, field, value)
    return c
  return apply


# Modifiers every config file has (a config file's own modifiers of the same name take precedence).
COMMON: dict[str, Callable[[Config], Config]] = {
    'dmt': _common_dmt,
    'bptt': _set('method', 'bptt'),
    'gru': _set('model.cell', 'gru'),
    'mlp': _set('model.cell', 'mlp'),
    'bf16': _set('model.dtype', 'bfloat16'),
    'remat': _set('model.remat', True),
}


def parse_value(text: str):
  """'64' -> 64, '0.2' -> 0.2, 'true' -> True, "'x'" or x -> 'x'."""
  if text.lower() in ('true', 'false'):
    return text.lower() == 'true'
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def override(c: Config, field: str, value) -> None:
  """Sets an existing field ('model.d_model') of `c`; ConfigError naming the nearest field for an unknown one."""
  *path, leaf = field.split('.')
  node = c
  for part in path:
    if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
      raise ConfigError(f'variant override {field}: {config_lib.unknown_field(c, field)}')
    node = node[part]
  if leaf not in node:
    raise ConfigError(f'variant override {field}: {config_lib.unknown_field(c, field)}')
  try:
    node[leaf] = value
  except TypeError as e:
    raise ConfigError(f'variant override {field}={value!r}: {e}') from e


def build(arg: str | None, config_file: str, sizes: dict[str, Callable[[], Config]],
          modifiers: dict[str, Callable[[Config], Config]] | None = None,
          aliases: dict[str, str] | None = None) -> Config:
  """get_config(arg) of a config file: the size named in `arg` (default ''), then its modifiers and
  key=value overrides in order. `aliases` maps a name to a composition (e.g. 'small_dmt': 'small,dmt')."""
  modifiers = {**COMMON, **(modifiers or {})}
  aliases = aliases or {}
  parts = []
  for part in (p.strip() for p in (arg or '').split(',')):
    if part in aliases:
      parts.extend(p.strip() for p in aliases[part].split(','))
    else:
      parts.append(part)
  names = [p for p in parts if p and '=' not in p]
  chosen = [p for p in names if p in sizes]
  if len(chosen) > 1:
    raise ConfigError(f'{config_file}: variant {arg!r} names more than one size: {", ".join(chosen)}')
  known = ', '.join(repr(k) for k in [*sizes, *modifiers, *aliases])
  for p in names:
    if p not in sizes and p not in modifiers:
      raise ConfigError(f'{config_file}: unknown variant {p!r} (in {arg!r}); known: {known}, and key=value')
  c = sizes[chosen[0] if chosen else '']()
  for p in parts:
    if not p or p in sizes:
      continue
    if '=' in p:
      field, _, value = p.partition('=')
      override(c, field.strip(), parse_value(value.strip()))
    else:
      c = modifiers[p](c)
  return c
