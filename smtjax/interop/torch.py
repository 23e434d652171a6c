"""The public PyTorch SMT code's checkpoints (akarshkumar0101/smt, src/model.py) as smtjax parameters.

This module never imports torch: the conversion is numpy. Give it the state dicts as mappings of name -> array, e.g.

    ckpt = torch.load('runs/smt_tinystories_0/checkpoint.pt', weights_only=False)   # train_smt.py's file
    teacher = {k: v.float().numpy() for k, v in ckpt['teacher'].items()}
    rnn = {k: v.float().numpy() for k, v in ckpt['rnn'].items()}
    params, model = convert(teacher, rnn, num_heads=8)
    config = public_config(model, 'tinystories')
    write_workdir('workdirs/public_tinystories', params, config)   # then experiments.evaluate / sample / init_from

(`rnn.pkl` / `teacher.pkl` of train_smt.py and train_dmt.py pickle whole modules: `.state_dict()` of each.)

What maps to what (x-transformers 2.18.5, the version the public code pins, with the public constructor
arguments: Encoder/Decoder(dim, depth, heads, rotary_pos_emb=True, use_rmsnorm=True)):

- `Teacher`: embed -> encoder.embed (the decoder shares it: model.share_embedding), encoder_mem_register ->
  encoder.registers, encoder -> encoder.block_i (+ final_norm -> encoder.norm_out), decoder -> decoder.block_i
  (+ final_norm -> decoder.norm_out), to_logits -> decoder.head.
- `RNN`: embed + rnn -> cell (its final_norm -> cell.norm_out); its readout (decoder + to_logits) -> 'readout'
  when it differs from the teacher's decoder (DMT fine-tunes it; train_smt.py saves a copy of the teacher's,
  which smtjax does not duplicate: the readout then *is* params['decoder']).
- A block: layers.{2i} = (RMSNorm g, Attention to_q/to_k/to_v/to_out), layers.{2i+1} = (RMSNorm g, FeedForward
  ff.0.0 / ff.2 with biases, exact GELU). Heads are `dim_head` = 64 wide (x-transformers' default) whatever
  d_model is; rotary positions act on the first dim_head // 2 features of each head (base 10000), which is
  model.rotary_fraction = 0.5.
- x-transformers' RMSNorm is normalize(x) * sqrt(d) * (g + 1) = x / rms(x) * (g + 1): AttentionLayers builds every
  norm with `unit_offset=True` (its default norm_add_unit_offset=True: g starts at 0, so weight decay pulls the
  gain towards 1), so smtjax's RMSNorm scale is g + 1 (`norm_unit_offset=False`: g, for an x-transformers
  version without the offset). The epsilons differ (1e-6 inside the root against 1e-12 on the norm): below
  1e-6 relative for unit-RMS inputs.
- Rotary layout: x-transformers 2.x rotates interleaved feature pairs (2i, 2i+1) with frequency i; smtjax
  rotates the halves (i, i + r/2) of the rotated part. Attention scores are q.k, unchanged when q and k have
  their features permuted alike, so the q and k projections' output features are permuted
  (smtjax feature i <- torch 2i, i + r/2 <- torch 2i + 1); v and the output projection are unchanged.
  `rotary_layout='half'` skips the permutation, for a checkpoint of an x-transformers version that rotates
  halves (1.x).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from smtjax import checkpoint as ckpt_lib
from smtjax import train, variants
from smtjax import workdir as workdir_lib

DIM_HEAD = 64  # x-transformers' DEFAULT_DIM_HEAD: the public code never sets dim_head
ROTARY_BASE = 10000.0
ROTARY_LAYOUTS = ('interleaved', 'half')

# The config.model fields of every converted checkpoint (variants.published sets the same; tested).
FIXED_MODEL = dict(cell='transformer', cell_residual=False, encoder_attention='bidirectional', use_bias=True,
                   final_norm=True, share_embedding=True, gelu_exact=True, mem_dim=0, attn_window=0)


def split_prefixed(flat: Mapping[str, np.ndarray]) -> tuple[dict, dict]:
  """{'teacher.<key>': a, 'rnn.<key>': b} -> (teacher state dict, rnn state dict)."""
  out = {'teacher': {}, 'rnn': {}}
  for k, v in flat.items():
    net, _, key = k.partition('.')
    if net in out:
      out[net][key] = np.asarray(v)
  return out['teacher'], out['rnn']


class _Reader:
  """Pops float32 arrays from a state dict, so that unread parameters can be reported."""

  def __init__(self, sd: Mapping[str, np.ndarray], what: str):
    self.sd = {k: v for k, v in sd.items() if not k.endswith('rotary_pos_emb.inv_freq')}
    self.freqs = {k: np.asarray(v, np.float64) for k, v in sd.items() if k.endswith('rotary_pos_emb.inv_freq')}
    self.what = what

  def __call__(self, key: str) -> np.ndarray:
    if key not in self.sd:
      raise KeyError(f'{self.what} state dict has no {key!r} (is it the public Teacher/RNN of src/model.py?)')
    return np.asarray(self.sd.pop(key), np.float32)

  def finish(self):
    if self.sd:
      raise ValueError(f'{self.what} state dict has parameters smtjax has no place for: {sorted(self.sd)[:8]} '
                       '(an x-transformers option the public code does not use?)')


def _depth(sd: Mapping, prefix: str) -> int:
  idx = {int(m.group(1)) for k in sd if (m := re.fullmatch(rf'{re.escape(prefix)}\.layers\.(\d+)\.1\.to_q\.weight', k))}
  if idx != set(range(0, 2 * len(idx), 2)):
    raise ValueError(f'{prefix}: expected attention layers at 0, 2, 4, ... (layer types a, f), found {sorted(idx)}')
  return len(idx)


def _rotary_dim(reader: _Reader, prefix: str, dim_head: int) -> int:
  """The rotated width r, from the inv_freq buffer when present (checked: base 10000), else dim_head // 2."""
  inv = reader.freqs.get(f'{prefix}.rotary_pos_emb.inv_freq')
  if inv is None:
    return dim_head // 2
  r = 2 * inv.shape[0]
  want = 1.0 / ROTARY_BASE ** (np.arange(0, r, 2) / r)
  if not np.allclose(inv, want, rtol=1e-5):
    raise ValueError(f'{prefix}: rotary frequencies are not 1/10000^(2i/{r}); smtjax has base 10000 only')
  return r


def _permutation(dim_head: int, rot: int, layout: str) -> np.ndarray:
  """Index into torch's head features for each smtjax head feature (see the module docstring)."""
  if layout not in ROTARY_LAYOUTS:
    raise ValueError(f'rotary_layout must be one of {ROTARY_LAYOUTS}, got {layout!r}')
  if layout == 'half':
    return np.arange(dim_head)
  return np.concatenate([np.arange(0, rot, 2), np.arange(1, rot, 2), np.arange(rot, dim_head)])


def _stack(read: _Reader, prefix: str, num_heads: int, layout: str, offset: float) -> tuple[dict, dict]:
  """An x-transformers Encoder/Decoder -> ({'block_i': ..., 'norm_out': ...}, its shape facts)."""
  depth = _depth(read.sd, prefix)
  q0 = read.sd[f'{prefix}.layers.0.1.to_q.weight']
  inner, d = q0.shape
  if inner % num_heads:
    raise ValueError(f'{prefix}: attention width {inner} is not divisible by num_heads={num_heads}')
  dh = inner // num_heads
  rot = _rotary_dim(read, prefix, dh)
  perm = _permutation(dh, rot, layout)
  tree = {}
  for i in range(depth):
    a, f = f'{prefix}.layers.{2 * i}', f'{prefix}.layers.{2 * i + 1}'

    def heads(w, permute):  # [H*Dh, D] (rows h-major) -> [D, H, Dh]
      w = w.T.reshape(d, num_heads, dh)
      return w[..., perm] if permute else w

    qkv = np.stack([heads(read(f'{a}.1.to_q.weight'), True), heads(read(f'{a}.1.to_k.weight'), True),
                    heads(read(f'{a}.1.to_v.weight'), False)], axis=1)  # [D, 3, H, Dh]
    tree[f'block_{i}'] = {
        'norm_attn': {'scale': read(f'{a}.0.0.g') + offset},
        'attn': {'qkv_proj': {'kernel': qkv},
                 'out_proj': {'kernel': read(f'{a}.1.to_out.weight').T.reshape(num_heads, dh, d)}},
        'norm_mlp': {'scale': read(f'{f}.0.0.g') + offset},
        'mlp': {'Dense_0': {'kernel': read(f'{f}.1.ff.0.0.weight').T, 'bias': read(f'{f}.1.ff.0.0.bias')},
                'Dense_1': {'kernel': read(f'{f}.1.ff.2.weight').T, 'bias': read(f'{f}.1.ff.2.bias')}},
    }
  tree['norm_out'] = {'scale': read(f'{prefix}.final_norm.g') + offset}
  mlp_ratio = tree['block_0']['mlp']['Dense_0']['kernel'].shape[1] // d
  return tree, dict(depth=depth, d_model=d, head_dim=dh, rotary_fraction=rot / dh, mlp_ratio=mlp_ratio)


def _head(read: _Reader) -> dict:
  return {'kernel': read('to_logits.weight').T, 'bias': read('to_logits.bias')}


def _default_heads(sd: Mapping, prefix: str) -> int:
  inner = np.shape(sd[f'{prefix}.layers.0.1.to_q.weight'])[0]
  if inner % DIM_HEAD:
    raise ValueError(f'{prefix}: attention width {inner} is not a multiple of {DIM_HEAD}: pass num_heads')
  return inner // DIM_HEAD


def _same(a: dict, b: dict) -> bool:
  if a.keys() != b.keys():
    return False
  return all(_same(a[k], b[k]) if isinstance(a[k], dict) else np.array_equal(a[k], b[k]) for k in a)


def _check(facts: list[dict]):
  for f in facts[1:]:
    for k in ('d_model', 'head_dim', 'rotary_fraction', 'mlp_ratio'):
      if f[k] != facts[0][k]:
        raise ValueError(f'the networks disagree on {k}: {facts[0][k]} and {f[k]} (smtjax has one value for all)')


def convert(teacher: Mapping[str, np.ndarray] | None = None, rnn: Mapping[str, np.ndarray] | None = None, *,
            num_heads: int | None = None, readout: bool | str = 'auto',
            rotary_layout: str = 'interleaved', norm_unit_offset: bool = True) -> tuple[dict, dict]:
  """Public state dicts -> (params, config.model fields).

  params: {'encoder', 'decoder'} from the teacher, 'cell' from the RNN, and 'readout' (the RNN's own decoder
  and to_logits) when `readout` is True, or 'auto' and it differs from the teacher's decoder (a DMT run).
  Without a teacher (an RNN trained alone, e.g. BPTT): {'decoder' (the RNN's readout), 'cell'}, and no
  num_mem_tokens among the fields (an RNN's weights do not show K: set it from the public config's mem_tokens).
  `num_heads`: the public config's n_heads (default: attention width / 64, x-transformers' head width).
  `rotary_layout`, `norm_unit_offset`: x-transformers conventions (module docstring); the defaults are 2.18.5's.
  The config.model fields are the sizes read off the weights plus FIXED_MODEL (apply them to
  variants.published's config, or use `public_config`).
  """
  if teacher is None and rnn is None:
    raise ValueError('convert needs a teacher or an RNN state dict')
  params, facts, model = {}, [], {}
  off = 1.0 if norm_unit_offset else 0.0
  if teacher is not None:
    read = _Reader(teacher, 'Teacher')
    heads = num_heads or _default_heads(read.sd, 'encoder')
    enc, f_enc = _stack(read, 'encoder', heads, rotary_layout, off)
    dec, f_dec = _stack(read, 'decoder', heads, rotary_layout, off)
    enc['embed'] = {'embedding': read('embed.weight')}
    enc['registers'] = read('encoder_mem_register.weight')
    dec['head'] = _head(read)
    read.finish()
    params['encoder'], params['decoder'] = enc, dec
    facts += [f_enc, f_dec]
    model.update(enc_depth=f_enc['depth'], dec_depth=f_dec['depth'], num_mem_tokens=enc['registers'].shape[0],
                 vocab_size=enc['embed']['embedding'].shape[0])
  if rnn is not None:
    read = _Reader(rnn, 'RNN')
    heads = num_heads or _default_heads(read.sd, 'rnn')
    cell, f_cell = _stack(read, 'rnn', heads, rotary_layout, off)
    cell['embed'] = {'embedding': read('embed.weight')}
    own, f_own = _stack(read, 'decoder', heads, rotary_layout, off)
    own['head'] = _head(read)
    read.finish()
    params['cell'] = cell
    facts += [f_cell, f_own]
    model.update(cell_depth=f_cell['depth'], vocab_size=cell['embed']['embedding'].shape[0])
    if teacher is None:
      params['decoder'] = own
      model.update(dec_depth=f_own['depth'])
    elif readout is True or (readout == 'auto' and not _same(own, params['decoder'])):
      if f_own['depth'] != model['dec_depth']:
        raise ValueError(f"the RNN's readout has depth {f_own['depth']}, the teacher's decoder {model['dec_depth']}")
      params['readout'] = own
    elif readout not in (False, 'auto'):
      raise ValueError(f"readout must be True, False or 'auto', got {readout!r}")
  _check(facts)
  f = facts[0]
  model.update(FIXED_MODEL, d_model=f['d_model'], num_heads=heads, head_dim=f['head_dim'],
               rotary_fraction=f['rotary_fraction'], mlp_ratio=f['mlp_ratio'])
  return params, model


def public_config(model: Mapping, name: str = 'tinystories', seq_len: int = 320, context: int = 256,
                  future: int = 64, dtype: str = 'bfloat16', readout: bool = False):
  """variants.published(name) with the converted sizes (`model`, from `convert`) and the given computation
  dtype. `readout`: the parameters hold a DMT-tuned 'readout' (config.method becomes 'dmt', whose parameter
  tree has one)."""
  c = variants.published(name, seq_len, context, future)
  for k, v in model.items():
    c.model[k] = v
  c.model.dtype = dtype
  if readout:
    c.method = 'dmt'
  return c


def write_workdir(workdir, params: dict, config, step: int = 0):
  """An smtjax workdir (config.json and an Orbax checkpoint at `step` with fresh optimizer state) holding
  `params`, so that experiments.evaluate / experiments.sample read it and a DMT run can start from it
  (config.init_from). `config`'s method decides the parameter tree: 'dmt' needs params['readout']."""
  workdir = workdir_lib.as_path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  trainer = train.Trainer.from_config(config)
  want = set(trainer.abstract_state.params)
  if set(params) != want:
    raise ValueError(f'params hold {sorted(params)}, config.method={config.method!r} needs {sorted(want)}')
  state = trainer.state_from_params(jax.tree.map(jnp.asarray, params))
  workdir_lib.save_config(config, workdir)
  checkpointer = ckpt_lib.Checkpointer(workdir, config.max_checkpoints_to_keep)
  try:
    checkpointer.save(step, state, {'index': 0})
  finally:
    checkpointer.close()
  return workdir


# Hyperparameter names the public code's saved configs use (train_smt.py's arguments; the golden fixture's).
_HPARAMS = {'num_heads': ('n_heads', 'heads', 'num_heads'), 'num_mem_tokens': ('mem_tokens', 'num_mem_tokens'),
            'context': ('Tc', 'context'), 'rollout': ('Td', 'rollout'), 'future': ('Tf', 'future')}


def _as_dict(obj) -> dict:
  if isinstance(obj, Mapping):
    return dict(obj)
  return dict(vars(obj)) if hasattr(obj, '__dict__') else {}


def load_public(path) -> tuple[dict | None, dict | None, dict]:
  """(teacher state dict, RNN state dict, hyperparameters) from a public checkpoint file: a torch file of
  train_smt.py / train_dmt.py ({'teacher': ..., 'rnn': ...}, read with torch, which must then be installed),
  or an .npz of 'teacher.<key>' / 'rnn.<key>' arrays with an optional 'hparams' JSON string. Hyperparameters
  are whatever the file holds under 'hparams', 'config', 'args' or 'cfg' (a dict or an argparse Namespace).
  A path that is not a file raises FileNotFoundError naming it."""
  given = epath.Path(path)
  path = str(path)
  if not given.is_file():
    raise FileNotFoundError(f'{path}: no such file' + (' (it is a directory)' if given.is_dir() else ''))
  if path.endswith('.npz'):
    with np.load(path) as z:
      flat = {k: z[k] for k in z.files}
    hp = json.loads(str(flat.pop('hparams'))) if 'hparams' in flat else {}
    teacher, rnn = split_prefixed(flat)
    return teacher or None, rnn or None, hp
  try:
    import torch  # noqa: PLC0415  (optional: only torch files need it)
  except ImportError as e:
    raise ValueError(f'{path}: reading a torch file needs torch installed (pip install torch), or save the '
                     "state dicts as an .npz of 'teacher.<key>' / 'rnn.<key>' arrays") from e
  ckpt = torch.load(path, map_location='cpu', weights_only=False)
  if not isinstance(ckpt, Mapping):
    raise ValueError(f'{path}: expected a dict with "teacher" and/or "rnn" state dicts, got {type(ckpt).__name__}')

  def state_dict(v):
    sd = v.state_dict() if hasattr(v, 'state_dict') else v
    return {k: t.float().numpy() for k, t in sd.items()} if sd is not None else None
  hp = next((_as_dict(ckpt[k]) for k in ('hparams', 'config', 'args', 'cfg') if k in ckpt), {})
  return state_dict(ckpt.get('teacher')), state_dict(ckpt.get('rnn')), hp


def hyperparameter(hp: Mapping, name: str):
  """The value of smtjax's `name` (num_heads, num_mem_tokens, context, rollout, future) in a public
  hyperparameter dict, or None when the file does not hold it."""
  return next((hp[k] for k in _HPARAMS[name] if k in hp), None)
