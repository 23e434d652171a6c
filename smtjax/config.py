"""The config contract: defaults every `configs/*.py` starts from, and validation.

Every field a run reads is defined once, in the table of its section (`SECTIONS`): its default, what it means,
and the values it may take when they are a fixed few. `default_config()` is built from the tables, so
`--config.x.y=...` overrides work with `lock_config=True` and a misspelt field fails at parse time. `validate`
checks values (before any compilation) and raises `ConfigError` naming the field: every field's `choices`
generically, then each section's checks across its fields (the function after its table). A config saved by
an older version is brought up to date once, when it is loaded (`load_saved` / `upgrade`); the library then
reads every field directly, and `check_compatible` holds it against a run that resumes or starts from it.
Values derived from several fields (head width, memory width, initial memory, the frozen `ModelConfig` the
networks read) are computed here, each in one function.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import json
import math
import pathlib
from typing import Any, NamedTuple

import jax.numpy as jnp
import ml_collections
from etils import epath
from ml_collections import config_dict

from smtjax import registry
from smtjax.data import synthetic
from smtjax.errors import CheckpointError, ConfigError


class Field(NamedTuple):
  """One config field: its default (a callable makes a fresh one per config: a ConfigDict, a placeholder), what
  it means, and the values it may take (`choices`, checked by `validate`; () = any of its type)."""
  default: Any
  doc: str
  # config.model only: whether a run may only resume from or initialise from a saved run that agrees on it.
  # 'always': resume and init_from; 'resume': resume only; '': free to change on resume.
  check: str = ''
  choices: tuple = ()


def _require(cond: bool, field: str, msg: str):
  if not cond:
    raise ConfigError(f'config.{field}: {msg}')


def _one_of(value, field: str, choices):
  _require(value in choices, field, f'unknown value {value!r}; expected one of {", ".join(map(repr, choices))}')


def _positive_ints(node, prefix: str, fields):
  for f in fields:
    _require(isinstance(node[f], int) and not isinstance(node[f], bool) and node[f] > 0, prefix + f,
             f'must be a positive integer, got {node[f]!r}')


# ---------------------------------------------------------------------------- the sections, one table each
# Each table is followed by the checks `validate` runs across its fields besides the generic `choices` check.

TOP_FIELDS: dict[str, Field] = {
    'seed': Field(0, 'seed of the parameters, the data stream and the random draws of training'),
    'method': Field('smt', "the objective: 'smt' (method.md §4), 'dmt' (fine-tuning an SMT run, §5), 'bptt' (§6), "
                    "or 'transformer': the plain-Transformer reference (the teacher's width and depth reading the "
                    'whole sequence)', choices=('smt', 'dmt', 'bptt', 'transformer')),
    'num_steps': Field(1000, 'training steps'),
    'batch_size': Field(32, 'sequences per step, over all devices'),
    'log_every': Field(50, 'steps between logged training metrics'),
    'eval_every': Field(250, 'steps between evaluations'),
    'checkpoint_every': Field(250, 'steps between checkpoints'),
    'num_eval_batches': Field(4, 'batches each periodic evaluation scores'),
    'eval_split': Field('test', "the split of the periodic evaluation: 'test', or 'valid' (a study's learning "
                        'curves)', choices=('test', 'valid')),
    'max_checkpoints_to_keep': Field(2, 'checkpoints kept in workdir/checkpoints'),
    'progress_bar': Field(True, 'a progress bar on the terminal'),
    # Object stores cannot append, hence the whole file and a flush period.
    'metrics_flush_secs': Field(30.0, 'metrics.jsonl is rewritten whole at evaluation and checkpoint steps and at '
                                'most this often in between; 0 rewrites it at every logged step (small runs, '
                                'tests that watch the file)'),
    'profile_steps': Field('', "'START:STOP' (e.g. '100:105'): a jax.profiler trace of steps START..STOP-1 in "
                           'workdir/profile/'),
    'init_from': Field('', 'workdir of a trained run whose parameters start this one (DMT: the SMT run)'),
}


def _validate_top(config):
  _positive_ints(config, '', ('num_steps', 'batch_size', 'log_every', 'eval_every', 'checkpoint_every',
                              'num_eval_batches', 'max_checkpoints_to_keep'))
  _require(config.metrics_flush_secs >= 0, 'metrics_flush_secs', 'must be >= 0')
  profile_range(config)


DATA_FIELDS: dict[str, Field] = {
    'name': Field('retrieval', 'a synthetic task (smtjax/data/synthetic.py) or a real dataset, as named in '
                  'smtjax/data/registry.py; the other fields are passed to it'),
    'seq_len': Field(32, 'T, the length of a training sequence (0: from the data, as configs/arrays.py sets it)'),
    'path': Field('', "real datasets: a file or a directory; '' means the default location / download"),
    'valid_fraction': Field(0.0, "> 0: a 'valid' split for choosing settings, the last fraction of a real "
                            "dataset's training stream (no longer trained on); synthetic tasks always have one (an "
                            'independent stream). The test split is never touched'),
    'source': Field('files', "'files' (IDX, .npy, .txt readers) or 'tfds' (mnist, sketch through "
                    'tfds.data_source; data.path = TFDS data_dir)', choices=('files', 'tfds')),
    'options': Field(ml_collections.ConfigDict, "the task's or dataset's own keyword arguments (free-form)"),
}


def _validate_data(config):
  _require(0 <= config.data.valid_fraction < 1, 'data.valid_fraction', 'must be in [0, 1) (0 = no validation split)')
  T = config.data.seq_len
  _require(isinstance(T, int) and T > 1, 'data.seq_len', f'must be an integer > 1, got {T!r}')


# config.model's table is also read by the saved-config upgrade (which lays a saved model over these defaults)
# and the architecture check (`checked_model_fields`). Adding a model option is one entry here plus its reader
# (ModelConfig.from_config when networks use it).
MODEL_FIELDS: dict[str, Field] = {
    'vocab_size': Field(256, 'tokens the networks embed and predict (0: the data\'s vocabulary)', 'always'),
    'd_model': Field(64, 'd: width of every network and of a memory token', 'always'),
    'num_heads': Field(4, 'attention heads of every Transformer', 'always'),
    'mlp_ratio': Field(4, 'MLP hidden width / d_model', 'always'),
    'num_mem_tokens': Field(4, 'K: memory tokens', 'always'),
    'mem_dim': Field(0, 'width of a memory token; 0: d_model. Smaller (e.g. 2) adds projections (memory geometry)',
                     'always'),
    'mem_size': Field(lambda: config_dict.placeholder(int),
                      'Z = K * memory width; a check only (must equal it when given)'),
    'enc_depth': Field(2, 'encoder blocks', 'always'),
    'dec_depth': Field(2, 'decoder blocks', 'always'),
    'encoder_attention': Field('causal', "'causal' token stream (needed by parallel SMT) or 'bidirectional'",
                               'always', choices=('causal', 'bidirectional')),
    'attn_window': Field(0, '> 0: encoder tokens and registers see only the last attn_window tokens (a '
                         'fine-tuning run may change it)', 'resume'),
    'cell': Field('transformer', 'a name registered in smtjax.registry (built in: smtjax/cells.py)', 'always'),
    'cell_options': Field(ml_collections.ConfigDict, "the cell's own options (e.g. the LRU's r_min, r_max; "
                          'free-form)', 'always'),
    'cell_depth': Field(2, 'blocks (Transformer) or layers of the cell', 'always'),
    'cell_residual': Field(False, 'Transformer cell: add the input memory back (public code: no)', 'always'),
    'initial_memory': Field('auto', "the RNN's initial memory: 'encoder' (m_{-1} = E(empty)), 'zeros', 'learned', "
                            "or 'auto' (the encoder's for SMT and DMT, zeros for BPTT); compared resolved", 'resume',
                            choices=('auto', 'encoder', 'zeros', 'learned')),
    'dtype': Field('float32', "computation dtype of the matrix products, 'float32' or 'bfloat16'; parameters stay "
                   'float32', choices=('float32', 'bfloat16')),
    'residual_dtype': Field('', "dtype of the residual stream, embeddings and memories: '' = model.dtype, "
                            "'float32' or 'bfloat16'; 'float32' keeps them float32 under a bfloat16 model.dtype, as "
                            'torch.autocast does in the public code', choices=('', 'float32', 'bfloat16')),
    'remat': Field(False, 'rematerialise Transformer blocks in the backward pass'),
    'head_dim': Field(0, 'width of one attention head; 0: d_model // num_heads (public code: 64)', 'always'),
    'rotary_fraction': Field(1.0, "fraction of each head's features that get rotary positions (public: 0.5)",
                             'always'),
    'use_bias': Field(False, 'biases in the MLPs and the output head (public code: yes; attention: never)', 'always'),
    'gelu_exact': Field(False, "the MLPs' GELU: erf (public code, torch.nn.GELU()) or Flax's tanh approximation",
                        'always'),
    'final_norm': Field(False, "learned-scale RMSNorm after the encoder's / Transformer cell's last block", 'always'),
    'share_embedding': Field(False, "the decoder reads the encoder's token embedding (public teacher: one "
                             'embedding)', 'always'),
    'prefix_chunk': Field(0, "parallel SMT: compute the encoder's register groups this many at a time, so peak "
                          'memory grows about linearly in T (0: all at once)'),
}


def _validate_model(m):
  _positive_ints(m, 'model.', ('vocab_size', 'd_model', 'num_heads', 'num_mem_tokens', 'enc_depth', 'dec_depth',
                               'cell_depth', 'mlp_ratio'))
  for f, what in (('head_dim', '0: d_model/num_heads'), ('mem_dim', '0: d_model'),
                  ('prefix_chunk', '0 = all register groups at once'), ('attn_window', '0 = no window')):
    v = m[f]
    _require(isinstance(v, int) and not isinstance(v, bool) and v >= 0, f'model.{f}',
             f'must be an integer >= 0 ({what}), got {v!r}')
  if not m.head_dim:
    _require(m.d_model % m.num_heads == 0, 'model.d_model',
             f'{m.d_model} is not divisible by model.num_heads={m.num_heads}')
  rf = m.rotary_fraction
  _require(isinstance(rf, (int, float)) and 0 < rf <= 1, 'model.rotary_fraction', f'must be in (0, 1], got {rf!r}')
  rot = head_dim(m) * rf
  _require(rot == int(rot) and int(rot) % 2 == 0 and rot >= 2, 'model.rotary_fraction',
           f'{rf} of the head width {head_dim(m)} is {rot}: the rotated part must be an even number of features')
  for f in ('use_bias', 'gelu_exact', 'final_norm', 'share_embedding', 'cell_residual', 'remat'):
    _require(isinstance(m[f], bool), f'model.{f}', f'must be True or False, got {m[f]!r}')
  if m.mem_size is not None:
    w = mem_width(m)
    _require(m.mem_size == m.num_mem_tokens * w, 'model.mem_size',
             f'memory size {m.mem_size} is not K*d = {m.num_mem_tokens}*{w} = {m.num_mem_tokens * w}')
  _one_of(m.cell, 'model.cell', registry.cell_names())  # the cells registered when the run starts


SMT_FIELDS: dict[str, Field] = {
    'mode': Field('parallel', "'window' (published: one transition per sequence) or 'parallel' (the memory of every "
                  'prefix from one causal encoder pass)', choices=('window', 'parallel')),
    'context': Field(16, "Tc: the encoder's window (window mode)"),
    'future': Field(16, 'Tf: future steps the decoder predicts from a memory'),
    'gamma': Field(1.0, "the decoder loss weighs a memory's j-th future target by gamma**j"),
    'coef_dec': Field(1.0, 'weight of the decoder loss'),
    'coef_dyn': Field(0.1, 'weight of the dynamics loss (the cell predicting the next teacher memory)'),
    'coef_unif': Field(0.001, 'weight of the uniformity loss on the memory tokens'),
    'unif_samples': Field(512, 'memory tokens the uniformity loss draws, at most'),
    'unif_t': Field(2.0, 't of the uniformity loss, log mean exp(-t ||z_i - z_j||^2)'),
    'dynamics_gradient': Field('both', "where the dynamics loss's gradient goes: 'both' (the RNN and both teacher "
                               "memories m_t, m_{t+1}), 'stop_target' (not into m_{t+1}), 'rnn_only' (into neither "
                               'teacher memory: the public `detach_rnn`)',
                               choices=('both', 'stop_target', 'rnn_only')),
    'trainable': Field('all', "'all', 'teacher' (RNN cell frozen) or 'rnn' (teacher frozen)",
                       choices=('all', 'teacher', 'rnn')),
    # Parallel mode samples, per sequence, the transitions (rollout starts) and the memories whose future is
    # decoded, by stratified sampling; each loss is an unbiased estimate of its mean over all of them, and the
    # encoder computes only the memories they read (docs/method.md).
    'num_transitions': Field(256, 'parallel mode: rollout starts sampled per sequence, of at most '
                             'T+1-rollout_steps (256 keeps every one up to T=256; 0 or at least as many: all)'),
    'num_decoder_samples': Field(8, 'parallel mode: memories decoded per sequence, of T+1 (0 or at least T+1: all)'),
    # Drift-robust SMT (parallel mode; smtjax/smt.py, docs/method.md), all off by default.
    'rollout_steps': Field(1, 'n: the cell rolls n steps from each teacher memory, matched at every step (1 = '
                           'one-step)'),
    'rollout_detach': Field(False, "detach each rolled step's input memory (one-step gradients on own inputs)"),
    'rollout_decode': Field(0.0, "> 0: weight of the readout's cross-entropy on the rolled memories"),
    'rollout_decode_readout': Field('train', 'what that cross-entropy trains besides the cell (and the encoder '
                                    "through the start memory, unless dynamics_gradient='rnn_only'): 'train' also "
                                    "the readout, which is the teacher's decoder; 'frozen' not it",
                                    choices=('train', 'frozen')),
    'memory_noise': Field(0.0, 'sigma of the noise on the teacher memory fed to the cell (the target stays clean)'),
    'memory_noise_mode': Field('fixed', "'fixed' sigma, or 'matched': sigma x RMS of the cell's one-step error",
                               choices=('fixed', 'matched')),
}


def _validate_smt(config):
  """smt.* as the method reads them: SMT all of them, DMT smt.mode and smt.future, BPTT none."""
  s, m, T = config.smt, config.model, config.data.seq_len
  _require(s.future >= 1, 'smt.future', 'must be >= 1')
  if config.method == 'smt' and s.mode == 'window':
    _require(s.context >= 1, 'smt.context', 'must be >= 1')
    _require(s.context + s.future <= T, 'smt.context',
             f'context + future = {s.context} + {s.future} is longer than the sequence (data.seq_len={T})')
    for f, off in (('rollout_steps', 1), ('rollout_detach', False), ('rollout_decode', 0.0), ('memory_noise', 0.0)):
      _require(s[f] == off, f'smt.{f}', "needs smt.mode='parallel' (prefix memories of every length)")
  elif config.method == 'smt':
    _require(m.encoder_attention == 'causal', 'model.encoder_attention',
             "parallel SMT needs 'causal' (each prefix memory must not see later tokens)")
    _require(s.future <= T, 'smt.future', f'{s.future} is longer than the sequence (data.seq_len={T})')
    for f in ('num_transitions', 'num_decoder_samples'):
      v = s[f]
      _require(isinstance(v, int) and not isinstance(v, bool) and v >= 0, f'smt.{f}',
               f'must be an integer >= 0 (0 = all), got {v!r}')
  n = s.rollout_steps
  _require(isinstance(n, int) and 1 <= n <= T, 'smt.rollout_steps',
           f'must be an integer in [1, seq_len={T}], got {n!r}')
  _require(s.rollout_decode >= 0, 'smt.rollout_decode', 'must be >= 0')
  _require(s.memory_noise >= 0, 'smt.memory_noise', 'must be >= 0 (0 = off)')
  _require(not (s.rollout_detach and n == 1), 'smt.rollout_detach',
           'has no effect with smt.rollout_steps=1 (there is no rolled step to detach)')
  _require(0 < s.gamma <= 1, 'smt.gamma', 'must be in (0, 1]')
  for f in ('coef_dec', 'coef_dyn', 'coef_unif'):
    _require(s[f] >= 0, f'smt.{f}', 'must be >= 0')
  _require(s.unif_samples >= 2, 'smt.unif_samples', 'must be >= 2')


# A curriculum over T (docs/configs.md#training-recipe); 0 and 0: none.
CURRICULUM_FIELDS: dict[str, Field] = {
    'length': Field(0, "the first stage's length: the task's own (T; keys_values: its number of pairs)"),
    'steps': Field(0, 'steps of the first stage, trained in workdir/curriculum; then num_steps steps at the full '
                   'length from its parameters (a fresh optimizer and warm-up)'),
}


def _validate_curriculum(config):
  cur = config.curriculum
  for k in ('length', 'steps'):
    _require(isinstance(cur[k], int) and cur[k] >= 0, f'curriculum.{k}', f'must be an integer >= 0, got {cur[k]!r}')
  _require((cur.length > 0) == (cur.steps > 0), 'curriculum', f'length and steps are both 0 (none) or both > 0, '
           f'got length={cur.length}, steps={cur.steps}')
  if cur.steps:
    _require(config.method != 'dmt', 'curriculum', 'a DMT run starts from its SMT run; give the SMT run the '
             'curriculum')
    _require(not config.init_from, 'curriculum', f'the run starts from its curriculum, so init_from must be empty, '
             f'got {config.init_from!r}')


# DMT fine-tuning (method.md §5), config.method='dmt', from the run in config.init_from. Sequences are
# Tc + Td + Tf long. The decoder and uniformity terms are 'teacher' in the published method: computed on the
# encoder's memories and only logged (loss_dec_teacher, loss_unif_teacher), carrying no gradient as the teacher
# is frozen; 'rnn' (an smtjax extension) computes them on the RNN's memories and trains them.
DMT_FIELDS: dict[str, Field] = {
    'context': Field(16, "Tc: the encoder's window (window-mode teachers) / the prefix read before the rollout"),
    'rollout': Field(16, 'Td: RNN steps rolled out on its own memories'),
    'every': Field(4, "k: the memory is matched to the encoder's every k-th rollout step"),
    'coef_mem': Field(10.0, "weight of the MSE to the encoder's memory every k-th step"),
    'coef_readout': Field(1.0, "weight of the readout's cross-entropy at every rollout step"),
    'decoder_term': Field('teacher', "the decoder term on the 'teacher' memories (logged) or the 'rnn' ones "
                          '(trained with coef_dec)', choices=('teacher', 'rnn')),
    'uniformity_term': Field('teacher', "the uniformity term on the 'teacher' memories (logged) or the 'rnn' ones "
                             '(trained with coef_unif)', choices=('teacher', 'rnn')),
    'coef_dec': Field(1.0, "weight of the decoder term with decoder_term='rnn'"),
    'coef_unif': Field(0.01, "weight of the uniformity term with uniformity_term='rnn'"),
    'backprop_through_rollout': Field(False, "False: one-step gradients (each step's input memory detached)"),
}


def _validate_dmt(config, init_from_later: bool = False):
  d, T = config.dmt, config.data.seq_len
  _positive_ints(d, 'dmt.', ('context', 'rollout', 'every'))
  _require(d.rollout % d.every == 0, 'dmt.every', f'{d.every} does not divide dmt.rollout={d.rollout}')
  _require(d.context + d.rollout <= T, 'dmt.rollout',
           f'context + rollout = {d.context} + {d.rollout} is longer than the sequence (data.seq_len={T})')
  if config.smt.mode == 'parallel':
    _require(config.model.encoder_attention == 'causal', 'model.encoder_attention',
             "DMT from a parallel-mode teacher reads its prefix memories: needs 'causal'")
  _require(bool(config.init_from) or init_from_later, 'init_from',
           'DMT fine-tunes a trained SMT run: set it to that run\'s workdir')


# The BPTT baseline (method.md §6), config.method='bptt': the same RNN rolled over the whole sequence.
BPTT_FIELDS: dict[str, Field] = {
    'truncation': Field(0, '> 0: gradients flow back at most this many steps (truncated BPTT)'),
    'parallel_scan': Field(False, 'linear cells (mingru, lru): roll out by a parallel scan over time '
                           '(jax.lax.associative_scan, O(log T) depth)'),
}


def _validate_bptt(config):
  b = config.bptt
  _require(b.truncation >= 0, 'bptt.truncation', 'must be >= 0')
  if b.parallel_scan:
    _require(b.truncation == 0, 'bptt.parallel_scan', 'needs bptt.truncation=0 (the scan covers the whole sequence)')
    _require(config.model.cell in registry.linear_cells(), 'bptt.parallel_scan',
             f'needs a linear cell (mingru, lru, or one of your own with coefficients / to_state / from_state), '
             f'not model.cell={config.model.cell!r}')


# experiments/evaluate.py and experiments/sample.py (method.md §7).
EVALUATE_FIELDS: dict[str, Field] = {
    'read_len': Field(0, 'tokens the teacher encodes before the RNN takes over (0: smt.context for a window-mode '
                      'run, else half the sequence)'),
    'eval_len': Field(0, 'rollout positions scored, j = 0..eval_len-1 (0 = to the end of the sequence)'),
    'num_batches': Field(8, 'held-out batches scored'),
}

SAMPLE_FIELDS: dict[str, Field] = {
    'num': Field(8, 'sequences sampled'),
    'prompt_len': Field(0, "prompt tokens (0 = evaluate.read_len's default)"),
    'length': Field(0, 'generated tokens (0 = the rest of the sequence)'),
    'temperature': Field(1.0, 'sampling temperature (0 = argmax)'),
    'seed': Field(0, 'seed of the sampling'),
}


def check_temperature(t, name: str = 'config.sample.temperature'):
  """A sampling temperature: a finite number >= 0 (0 = argmax); ConfigError naming `name` otherwise."""
  if not (isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) and t >= 0):
    raise ConfigError(f'{name}: must be a finite number >= 0 (0 = argmax), got {t!r}')


OPTIM_FIELDS: dict[str, Field] = {
    'lr': Field(1e-3, 'peak learning rate of AdamW'),
    'b1': Field(0.9, "AdamW's b1"),
    'b2': Field(0.95, "AdamW's b2"),
    'weight_decay': Field(0.01, "AdamW's weight decay"),
    'weight_decay_on': Field('matrices', "what AdamW decays: 'matrices' (kernels, embeddings, registers) or 'all' "
                             '(the public code: every parameter; norm gains decay toward 1, as the public gain 1 + g '
                             'decays g toward 0)', choices=('matrices', 'all')),
    'warmup_frac': Field(0.01, 'linear warm-up over this fraction of num_steps'),
    'schedule': Field('constant', "after the warm-up: 'constant', or 'cosine' decay to 0",
                      choices=('constant', 'cosine')),
    'grad_clip': Field(1.0, 'the gradient norm is clipped to this (0: no clipping)'),
    'clip_mode': Field('global', "'global': one norm over all trained parameters; 'per_network': the teacher "
                       '(encoder, decoder) and the RNN (cell, readout, initial memory) are each clipped to grad_clip '
                       "(the public code's two clip_grad_norm_ calls)", choices=('global', 'per_network')),
}


def _validate_optim(o):
  _require(o.lr > 0, 'optim.lr', f'learning rate must be positive, got {o.lr}')
  _require(0 <= o.warmup_frac < 1, 'optim.warmup_frac', 'must be in [0, 1)')
  _require(o.grad_clip >= 0, 'optim.grad_clip', 'must be >= 0 (0 disables clipping)')


# The device mesh, data x fsdp, checked against the device count by `mesh_shape`.
MESH_FIELDS: dict[str, Field] = {
    'data': Field(-1, 'devices along the data axis (-1: all the others)'),
    'fsdp': Field(1, 'devices the parameters are sharded over (-1: all the others)'),
}

# ---------------------------------------------------------------------------------------------- the config

# Every field of the config, by section ('': the top level).
SECTIONS: dict[str, dict[str, Field]] = {
    '': TOP_FIELDS, 'data': DATA_FIELDS, 'model': MODEL_FIELDS, 'smt': SMT_FIELDS, 'curriculum': CURRICULUM_FIELDS,
    'dmt': DMT_FIELDS, 'bptt': BPTT_FIELDS, 'evaluate': EVALUATE_FIELDS, 'sample': SAMPLE_FIELDS,
    'optim': OPTIM_FIELDS, 'mesh': MESH_FIELDS,
}
# Free-form options (a task's, a cell's): ConfigDicts whose fields the contract does not define.
FREE_FORM = tuple(f'{s}.{k}' for s, fields in SECTIONS.items() for k, f in fields.items()
                  if f.default is ml_collections.ConfigDict)


def _defaults(fields: dict[str, Field]) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  for name, f in fields.items():
    c[name] = f.default() if callable(f.default) else f.default
  return c


def default_config() -> ml_collections.ConfigDict:
  """Every field at its default (`SECTIONS`): small, CPU-sized values; task configs override what they need."""
  c = _defaults(TOP_FIELDS)
  for section, fields in SECTIONS.items():
    if section:
      c[section] = _defaults(fields)
  return c


def checked_model_fields(resuming: bool) -> tuple[str, ...]:
  """The config.model fields a saved run must agree on to be resumed (resuming) or initialised from."""
  return tuple(f'model.{k}' for k, f in MODEL_FIELDS.items() if f.check == 'always' or (resuming and f.check))


def validate(config: ml_collections.ConfigDict, num_devices: int | None = None, data_vocab_size: int | None = None,
             init_from_later: bool = False):
  """Raises ConfigError naming the first invalid field. Cheap: runs before any compilation. `init_from_later`:
  a study checks a DMT stage before the run it starts from exists (its init_from is set then)."""
  for section, fields in SECTIONS.items():  # every enumerated field, against its table's choices
    node = config[section] if section else config
    for name, f in fields.items():
      if f.choices:
        _one_of(node[name], f'{section}.{name}' if section else name, f.choices)
  _validate_top(config)
  _validate_data(config)
  _validate_model(config.model)
  _validate_smt(config)
  if config.method == 'dmt':
    _validate_dmt(config, init_from_later)
  if config.method == 'bptt':
    _validate_bptt(config)
  _validate_optim(config.optim)
  _validate_curriculum(config)
  check_temperature(config.sample.temperature)
  if data_vocab_size is not None:
    _require(config.model.vocab_size >= data_vocab_size, 'model.vocab_size',
             f'{config.model.vocab_size} is smaller than the data vocabulary ({data_vocab_size} tokens for '
             f'data.name={config.data.name!r})')
  if num_devices is not None:
    mesh_shape(config, num_devices)
    _require(config.batch_size % num_devices == 0, 'batch_size',
             f'{config.batch_size} is not divisible by the number of devices ({num_devices})')


def reference_markdown() -> str:
  """The field reference of docs/configs.md: one Markdown table per section, from `SECTIONS` (each doc names its
  field's choices)."""
  checked = {'always': 'on resume and init_from', 'resume': 'on resume', '': ''}
  lines = []
  for section, fields in SECTIONS.items():
    model = fields is MODEL_FIELDS
    head = ['field', 'default'] + (['checked against a saved run'] if model else []) + ['meaning']
    lines += ['', f'### `config.{section}`' if section else '### Top level', '', _md_row(head),
              '|' + '---|' * len(head)]
    for name, f in fields.items():
      lines.append(_md_row([f'`{name}`', f'`{_shown(f.default)}`'] + ([checked[f.check]] if model else []) + [f.doc]))
  return '\n'.join(lines[1:]) + '\n'


def _shown(default) -> str:
  v = default() if callable(default) else default
  if isinstance(v, ml_collections.ConfigDict):
    return '{}'
  return repr(v.get() if isinstance(v, config_dict.FieldReference) else v)


def _md_row(cells) -> str:
  return '| ' + ' | '.join(c.replace('|', '\\|') for c in cells) + ' |'


# ------------------------------------------------------------------------------------------ derived values
# Each value derived from several fields is computed here, in exactly one function.

def infer_from_data(config, seq_len: int, vocab_size: int) -> ml_collections.ConfigDict:
  """`config` with the fields left to the data filled in: data.seq_len = 0 (T from the file, the arrays
  source) and model.vocab_size = 0 (the data's vocabulary), as configs/arrays.py and configs/tokens.py
  set them. An inferred T also caps smt.future and smt.context at T. Returns a copy when anything is filled,
  else `config` itself."""
  if config.data.seq_len != 0 and config.model.vocab_size != 0:
    return config
  c = config.copy_and_resolve_references()
  if c.model.vocab_size == 0:
    c.model.vocab_size = int(vocab_size)
  if c.data.seq_len == 0:
    T = c.data.seq_len = int(seq_len)
    c.smt.future = min(c.smt.future, T)
    c.smt.context = min(c.smt.context, T - 1) if c.smt.mode == 'window' else c.smt.context
  return c


def initial_memory(config) -> str:
  """config.model.initial_memory with 'auto' resolved by config.method: zeros for BPTT, else the encoder's."""
  if config.model.initial_memory != 'auto':
    return config.model.initial_memory
  return 'zeros' if config.method == 'bptt' else 'encoder'


def head_dim(model_config) -> int:
  """The width of one attention head: model.head_dim, or d_model // num_heads when it is 0."""
  return int(model_config.head_dim or model_config.d_model // model_config.num_heads)


def mem_width(model_config) -> int:
  """D, the width of one memory token: model.mem_dim, or d_model when mem_dim is 0."""
  return int(model_config.mem_dim or model_config.d_model)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The architecture every network module reads, resolved and frozen (hashable: a static jit argument).
  Built only by `from_config`, so each field has one source: config.model (and config.method for the
  initial memory). Field meanings: `MODEL_FIELDS`."""
  vocab_size: int
  d_model: int
  num_heads: int
  head_dim: int  # resolved: never 0
  mlp_ratio: int
  num_mem_tokens: int  # K
  mem_dim: int  # D, resolved: never 0
  enc_depth: int
  dec_depth: int
  encoder_attention: str
  attn_window: int
  prefix_chunk: int
  cell: str
  cell_options: tuple  # config.model.cell_options as sorted (name, value) pairs (hashable)
  cell_depth: int
  cell_residual: bool
  initial_memory: str  # resolved: 'encoder', 'zeros' or 'learned'
  dtype: Any  # of the matrix products: jnp.float32 or jnp.bfloat16
  residual_dtype: Any  # of the residual stream, embeddings and memories
  remat: bool
  rotary_fraction: float
  use_bias: bool
  gelu_exact: bool
  final_norm: bool
  share_embedding: bool

  @classmethod
  def from_config(cls, config) -> ModelConfig:
    m = config.model
    return cls(
        vocab_size=m.vocab_size, d_model=m.d_model, num_heads=m.num_heads, head_dim=head_dim(m),
        mlp_ratio=m.mlp_ratio, num_mem_tokens=m.num_mem_tokens, mem_dim=mem_width(m), enc_depth=m.enc_depth,
        dec_depth=m.dec_depth, encoder_attention=m.encoder_attention, attn_window=m.attn_window,
        prefix_chunk=m.prefix_chunk, cell=m.cell, cell_options=tuple(sorted(m.cell_options.to_dict().items())),
        cell_depth=m.cell_depth, cell_residual=m.cell_residual,
        initial_memory=initial_memory(config), dtype=jnp.dtype(m.dtype).type,
        residual_dtype=jnp.dtype(m.residual_dtype or m.dtype).type, remat=m.remat,
        rotary_fraction=float(m.rotary_fraction), use_bias=m.use_bias, gelu_exact=m.gelu_exact,
        final_norm=m.final_norm, share_embedding=m.share_embedding)

  @property
  def projects_memory(self) -> bool:
    """Whether memory tokens (width mem_dim) need projections to and from d_model."""
    return self.mem_dim != self.d_model


@dataclasses.dataclass(frozen=True)
class Run:
  """A run's config resolved once: each value that the trainer, the loop and the evaluator derive from
  several fields is computed in `Run.of` and read from this frozen record everywhere else. `config` keeps the
  plain options (each objective reads its own section: config.smt, config.dmt, config.bptt) and is what the
  workdir saves. Build a training run's with `resolve`."""
  config: Any  # ml_collections.ConfigDict, validated, the data's sizes filled in
  model: ModelConfig
  mesh_shape: tuple[int, int]  # (data, fsdp) devices
  frozen: tuple[str, ...]  # top-level parameter groups that get no update
  profile: tuple[int, int] | None  # steps START..STOP-1 are traced
  eval_teacher: bool  # the periodic evaluation also scores the teacher (a causal teacher that is trained)

  @classmethod
  def of(cls, config, num_devices: int) -> Run:
    """`config` resolved for `num_devices` devices; validation is `resolve`'s (a config built in code, e.g.
    by a test or a notebook, may be resolved as it is)."""
    return cls(config=config, model=ModelConfig.from_config(config), mesh_shape=mesh_shape(config, num_devices),
               frozen=frozen_networks(config), profile=profile_range(config), eval_teacher=scores_teacher(config))


def resolve(config, num_devices: int, seq_len: int, vocab_size: int) -> Run:
  """A training run's config checked and resolved, before anything is compiled: the data's sizes filled in
  (`infer_from_data`), validated (ConfigError naming the first bad field), every derived value computed once."""
  config = infer_from_data(config, seq_len, vocab_size)
  validate(config, num_devices=num_devices, data_vocab_size=vocab_size)
  return Run.of(config, num_devices)


CURRICULUM_DIR = 'curriculum'  # a curriculum's first stage, inside the run's workdir


def stages(config, workdir) -> list[tuple[ml_collections.ConfigDict, epath.Path]]:
  """The runs that training `config` in `workdir` makes, in order, each with its workdir: the run itself, or with
  `config.curriculum` two: `curriculum.steps` steps at the task's length `curriculum.length` (synthetic.resize: T,
  or keys_values' pairs; the decoder's future and a window's context cut to fit, its evaluations, logs and
  checkpoints at most every `curriculum.steps`) in workdir/curriculum, then `config` at full length from its
  parameters (init_from that workdir). Neither stage has a curriculum of its own."""
  workdir = epath.Path(workdir)
  if not config.curriculum.steps:
    return [(config, workdir)]
  validate(config)
  first = config.copy_and_resolve_references()
  synthetic.resize(first.data, config.curriculum.length)
  T, steps = int(first.data.seq_len), int(config.curriculum.steps)
  if not 1 < T < config.data.seq_len:
    raise ConfigError(f'config.curriculum.length: {config.curriculum.length} gives sequences of {T} tokens; the '
                      f'curriculum needs them shorter than the run\'s {config.data.seq_len} and longer than 1')
  first.smt.future = min(first.smt.future, T)
  if first.smt.mode == 'window':
    first.smt.context = min(first.smt.context, T - 1)
  first.num_steps = steps
  for k in ('eval_every', 'log_every', 'checkpoint_every'):
    first[k] = min(first[k], steps)
  rest = config.copy_and_resolve_references()
  for c in (first, rest):
    c.curriculum.length = c.curriculum.steps = 0
  rest.init_from = str(workdir / CURRICULUM_DIR)
  return [(first, workdir / CURRICULUM_DIR), (rest, workdir)]


def scores_teacher(config) -> bool:
  """Whether a training run's evaluation scores its teacher: a causal one (prefix memories) that is trained."""
  return config.model.encoder_attention == 'causal' and config.method not in ('bptt', 'transformer')


def frozen_networks(config) -> tuple[str, ...]:
  """Top-level parameter groups that get no update: by config.smt.trainable for SMT; the teacher in DMT;
  the (unused) encoder in BPTT unless it provides the initial memory."""
  if config.method == 'dmt':
    return ('encoder', 'decoder')
  if config.method == 'bptt':
    return () if initial_memory(config) == 'encoder' else ('encoder',)
  if config.method == 'transformer':  # its parameters are the one group {'transformer'}
    return ()
  return {'all': (), 'teacher': ('cell', 'init_memory'), 'rnn': ('encoder', 'decoder')}[config.smt.trainable]


def profile_range(config) -> tuple[int, int] | None:
  """config.profile_steps 'START:STOP' as (START, STOP) (steps START..STOP-1 are traced), or None when ''."""
  spec = config.profile_steps
  if spec in ('', None):
    return None
  _require(isinstance(spec, str), 'profile_steps', f"must be a string 'START:STOP', got {spec!r}")
  start, sep, stop = spec.partition(':')
  ok = sep == ':' and start.strip().isdigit() and stop.strip().isdigit()
  _require(ok, 'profile_steps', f"expected 'START:STOP' with integers (e.g. '100:105'), got {spec!r}")
  start, stop = int(start), int(stop)
  _require(1 <= start < stop, 'profile_steps', f'need 1 <= START < STOP (steps count from 1), got {spec!r}')
  return start, stop


def mesh_shape(config, num_devices: int) -> tuple[int, int]:
  """(data, fsdp) sizes from config.mesh, resolving a single -1."""
  data, fsdp = config.mesh.data, config.mesh.fsdp
  _require(data == -1 or data > 0, 'mesh.data', 'must be -1 or positive')
  _require(fsdp == -1 or fsdp > 0, 'mesh.fsdp', 'must be -1 or positive')
  _require(not (data == -1 and fsdp == -1), 'mesh', 'at most one of mesh.data, mesh.fsdp may be -1')
  if data == -1:
    _require(num_devices % fsdp == 0, 'mesh.fsdp', f'{fsdp} does not divide the device count {num_devices}')
    data = num_devices // fsdp
  if fsdp == -1:
    _require(num_devices % data == 0, 'mesh.data', f'{data} does not divide the device count {num_devices}')
    fsdp = num_devices // data
  _require(data * fsdp == num_devices, 'mesh', f'data*fsdp = {data}*{fsdp} != device count {num_devices}')
  return data, fsdp


# ------------------------------------------------------------------------------------ field names, saved configs

def field_paths(config, prefix: str = '') -> list[str]:
  """Every leaf field of `config` as a dotted path ('model.d_model', ...)."""
  out = []
  for k, v in config.items():
    if isinstance(v, ml_collections.ConfigDict):
      out.extend(field_paths(v, f'{prefix}{k}.'))
    else:
      out.append(prefix + k)
  return out


def unknown_field(config, dotted: str) -> str:
  """The one-line message for a field `config` does not have, naming the nearest known one."""
  known = field_paths(config)
  known += sorted({p.rsplit('.', 1)[0] for p in known if '.' in p})  # sections too ('model', 'smt', ...)
  near = difflib.get_close_matches(dotted, known, n=1, cutoff=0.6)
  hint = f'; did you mean config.{near[0]}?' if near else ''
  return f'config.{dotted}: no such field{hint}'


def upgrade(saved: dict) -> ml_collections.ConfigDict:
  """A config saved by any smtjax version (the dict of a workdir's config.json) as a current one:
  `default_config()` with the saved values laid over it, so fields added since it was saved get their
  defaults. Task options (data.options) are kept whatever they are; other fields the current version
  lacks raise ConfigError."""
  c = default_config()
  _lay_over(c, _translate_deprecated(saved), '')
  return c


def _translate_deprecated(saved: dict) -> dict:
  """A saved config with its deprecated fields in their current spelling, so no run ever reads them:
  smt.detach_target=True is smt.dynamics_gradient='stop_target' (False: the default, 'both')."""
  smt = dict(saved.get('smt') or {})
  if 'detach_target' not in smt:
    return saved
  if smt.pop('detach_target'):
    if smt.get('dynamics_gradient', 'both') == 'rnn_only':
      raise ConfigError("config.smt.detach_target (deprecated; in a saved config): contradicts "
                        "smt.dynamics_gradient='rnn_only'")
    smt['dynamics_gradient'] = 'stop_target'
  return dict(saved, smt=smt)


def _lay_over(node: ml_collections.ConfigDict, saved: dict, prefix: str):
  for k, v in saved.items():
    path = prefix + k
    if prefix[:-1] in FREE_FORM:  # a task's or a cell's own options, kept as saved
      node[k] = v
    elif k not in node:
      raise ConfigError(unknown_field(default_config(), path) + ' (in a saved config)')
    elif isinstance(node[k], ml_collections.ConfigDict):
      _lay_over(node[k], v or {}, path + '.')
    else:
      try:
        node[k] = v
      except TypeError as e:
        raise ConfigError(f'config.{path}: saved value {v!r} does not fit the field ({e})') from e


def load_saved(workdir) -> ml_collections.ConfigDict:
  """workdir/config.json, upgraded (`upgrade`); CheckpointError when it is missing or unreadable."""
  path = epath.Path(workdir) / 'config.json'
  if not path.exists():
    raise CheckpointError(f'{workdir} holds no trained run: no config.json')
  try:
    saved = json.loads(path.read_text())
  except (OSError, ValueError) as e:  # ValueError: not JSON, or not UTF-8 text
    raise CheckpointError(f'{path} is unreadable: {e}') from e
  if not isinstance(saved, dict):
    raise CheckpointError(f'{path} is unreadable: not a JSON object')
  return upgrade(saved)


def check_compatible(run: Run, workdir, what: str = 'resume from'):
  """Raises ConfigError if workdir/config.json (upgraded to the current fields) disagrees with `run` on a field it
  must keep (`checked_model_fields`: more of them when resuming than when initialising from the run); nothing to
  check when there is no config.json."""
  if not (epath.Path(workdir) / 'config.json').exists():
    return
  saved = load_saved(workdir)
  diffs = [f'config.{k}: saved {_compared(saved, k)!r}, now {_compared(run.config, k)!r}'
           for k in checked_model_fields(resuming=what == 'resume from')
           if _compared(saved, k) != _compared(run.config, k)]
  if diffs:
    raise ConfigError(f'cannot {what} {workdir}: its run has a different architecture:\n  ' + '\n  '.join(diffs))


def _compared(config, dotted: str):
  """Field `dotted` of `config` as two runs must agree on it: initial_memory resolved ('auto' means the encoder's
  or zeros, by method), options as a plain dict."""
  if dotted == 'model.initial_memory':
    return initial_memory(config)
  value = config
  for part in dotted.split('.'):
    value = value[part]
  return value.to_dict() if hasattr(value, 'to_dict') else value


def load_config(spec: str) -> ml_collections.ConfigDict:
  """A config file's get_config(variant), for notebooks and scripts: 'path/to/configs/copy.py:small,mem2d'
  (a path, relative to the working directory, then an optional variant after the colon)."""
  name, _, variant = spec.partition(':')
  path = pathlib.Path(name)
  if not path.is_file():
    raise ConfigError(f'config file {str(path)!r} not found (from {spec!r})')
  module_spec = importlib.util.spec_from_file_location(f'_smtjax_config_{path.stem}', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(variant or None)
