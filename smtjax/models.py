"""The three networks of SMT (method.md §3) as Flax Linen modules, and `Networks`, which binds them
into pure functions of one parameter tree {'encoder', 'decoder', 'cell'}.

Memories are [B, K, D] arrays of K tokens of width D (the memory size is Z = K*D); every memory token is
RMS-normalised without a learned scale. D is d_model unless `model.mem_dim` sets a different width (e.g. 2
or 3 to look at memory geometry); then the encoder ends with a projection d_model -> D (`mem_out`) and
the decoder and the Transformer cell start with D -> d_model (`mem_in`); the cell also ends with `mem_out`.
Token ids are in [0, V); -1 in an input means padding.
The RNN is (cell, readout) and its readout *is* the teacher decoder's parameters (`params['decoder']`):
there is no second copy that could go stale. Only DMT fine-tuning, which trains the readout while the
teacher stays frozen, adds `params['readout']` (initialised as a copy of the decoder, same architecture);
`Networks.readout` then uses it. An optional `params['init_memory']` [K, D] is a learned initial memory.
With `model.share_embedding` (the public teacher) the decoder has no embedding: `Networks.decode` embeds its
future inputs with `params['encoder']['embed']` (the readout reads memories only and needs none).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from smtjax import cells, layers
from smtjax.config import ModelConfig


def _valid_positions(x_BxT):
  """valid [B, T] (x >= 0), rotary positions counting valid tokens only, and the count of valid tokens."""
  valid = x_BxT >= 0
  count = jnp.cumsum(valid, axis=-1)
  return valid, jnp.maximum(count - 1, 0), count


class Encoder(nn.Module):
  """Teacher encoder: tokens plus K learned registers -> memory [B, K, D].

  `cfg.encoder_attention='bidirectional'` is the published encoder (all positions see all positions).
  'causal': token i reads valid tokens j <= i; the registers read all valid tokens and each other. Then a
  memory depends on its tokens only through a causal stream, and `prefix_memories` computes the memory of
  every prefix in one pass. With `cfg.attn_window > 0` token i reads tokens (i - window, i] and registers
  read the last `window` tokens.
  Padding (-1) is masked out of attention and does not count towards rotary positions, so a memory does
  not depend on padding. Registers sit at positions n, ..., n+K-1 after n valid tokens.
  """
  cfg: ModelConfig

  def setup(self):
    c = self.cfg
    self.embed = layers.token_embedding(c)
    if c.projects_memory:
      self.mem_out = layers.memory_projection(c.mem_dim, c.dtype)
    if c.final_norm:
      self.norm_out = layers.RMSNorm(c.residual_dtype)
    self.registers = self.param('registers', nn.initializers.normal(0.02), (c.num_mem_tokens, c.d_model))
    block = layers.make_block(c.remat)
    self.blocks = [block(c, window=c.attn_window, prefix_chunk=c.prefix_chunk, name=f'block_{i}')
                   for i in range(c.enc_depth)]

  def embed_tokens(self, x_BxT):
    """Token embeddings [B, T, D] (padding -1 embeds as token 0; attention masks it). The decoder reads
    them from here when the teacher shares one embedding."""
    return self.embed(jnp.maximum(x_BxT, 0))

  def _token_mask(self, valid, pos):
    """[B, T, T]: query i may read key j."""
    T = valid.shape[-1]
    mask = jnp.broadcast_to(valid[:, None, :], valid.shape[:1] + (T, T))
    if self.cfg.encoder_attention == 'causal':
      mask = mask & jnp.tril(jnp.ones((T, T), bool))
    if self.cfg.attn_window > 0:
      mask = mask & (pos[:, :, None] - pos[:, None, :] < self.cfg.attn_window)
    return mask

  def __call__(self, x_BxT, tok_emb=None):
    """Memory of the whole (possibly left-padded) window: [B, K, D]. `tok_emb` [B, T, D] replaces the
    token embeddings (gradients with respect to the tokens: studies.analysis)."""
    c = self.cfg
    B, T = x_BxT.shape
    K = c.num_mem_tokens
    valid, pos, count = _valid_positions(x_BxT)
    n = count[:, -1:]  # [B, 1] valid tokens
    reg_pos = n + jnp.arange(K)
    tok = self.embed_tokens(x_BxT) if tok_emb is None else tok_emb
    h = jnp.concatenate([tok, jnp.broadcast_to(self.registers.astype(c.residual_dtype), (B, K, c.d_model))], axis=1)
    all_pos = jnp.concatenate([pos, reg_pos], axis=1)
    if c.encoder_attention == 'bidirectional':  # key padding only: the fused attention path
      mask = jnp.concatenate([valid, jnp.ones((B, K), bool)], axis=1)[:, None, :]
    else:
      reads = valid
      if c.attn_window > 0:
        reads = reads & (pos >= n - c.attn_window)
      top = jnp.concatenate([self._token_mask(valid, pos), jnp.zeros((B, T, K), bool)], axis=2)
      bottom = jnp.concatenate([jnp.broadcast_to(reads[:, None, :], (B, K, T)), jnp.ones((B, K, K), bool)], axis=2)
      mask = jnp.concatenate([top, bottom], axis=1)
    for blk in self.blocks:
      h = blk(h, all_pos, mask)
    return self._memory(h[:, T:])

  def _memory(self, h):
    if self.cfg.final_norm:
      h = self.norm_out(h)
    if self.cfg.projects_memory:
      h = self.mem_out(layers.rms_norm(h)).astype(self.cfg.residual_dtype)
    return layers.rms_norm(h)

  def prefix_memories(self, x_BxT, tok_emb=None, lengths_BxG=None):
    """Memories of prefixes in one pass: [B, G, K, D], entry g = E(x[b, :lengths[b, g]]) (length 0: the
    empty prefix). `lengths_BxG` [B, G] (values in 0..T) chooses which; None: every prefix, G = T+1, entry L
    of length L.

    Needs causal attention. A group of K registers reads the tokens of its prefix (and its own registers)
    and no other group, so the chosen groups equal the same entries of the full pass exactly, at a cost
    linear in G; with `cfg.prefix_chunk` > 0 the groups are computed that many at a time.
    """
    c = self.cfg
    if c.encoder_attention != 'causal':
      raise ValueError("prefix_memories needs encoder_attention='causal'")
    B, T = x_BxT.shape
    if lengths_BxG is None:
      lengths_BxG = jnp.broadcast_to(jnp.arange(T + 1), (B, T + 1))
    K, G = c.num_mem_tokens, lengths_BxG.shape[1]
    valid, pos, count = _valid_positions(x_BxT)
    n_before = jnp.concatenate([jnp.zeros((B, 1), count.dtype), count], axis=1)  # [B, T+1] valid tokens < L
    n_before = jnp.take_along_axis(n_before, lengths_BxG, axis=1)  # [B, G]
    reg_pos = n_before[:, :, None] + jnp.arange(K)  # [B, G, K]
    tok = self.embed_tokens(x_BxT) if tok_emb is None else tok_emb
    reg = jnp.broadcast_to(self.registers.astype(c.residual_dtype), (B, G, K, c.d_model))
    for blk in self.blocks:  # the masks (causal, window, padding) are built inside, per chunk of groups
      tok, reg = blk.prefix_groups(tok, pos, valid, reg, reg_pos, lengths_BxG)
    return self._memory(reg)


class Decoder(nn.Module):
  """Causal teacher decoder over [memory (K tokens), embed(future inputs)].

  Returns logits [B, F+1, V] read at positions K-1 ... K+F-1: entry 0 predicts from the memory alone,
  entry j after also reading future inputs 0..j-1. With F = 0 this is the RNN's readout.
  `future_emb` [B, F, D] replaces the future embeddings. With `cfg.share_embedding` the decoder has no
  embedding of its own and the caller passes the encoder's (`Networks.decode` does).
  """
  cfg: ModelConfig

  def setup(self):
    c = self.cfg
    if not c.share_embedding:
      self.embed = layers.token_embedding(c)
    if c.projects_memory:
      self.mem_in = layers.memory_projection(c.d_model, c.dtype)
    block = layers.make_block(c.remat)
    self.blocks = [block(c, causal=True, name=f'block_{i}') for i in range(c.dec_depth)]
    self.norm_out = layers.RMSNorm(c.dtype)
    self.head = nn.Dense(c.vocab_size, use_bias=c.use_bias, dtype=c.dtype, kernel_init=nn.initializers.normal(0.02))

  def __call__(self, mem_BxKxD, future_BxF, future_emb=None):
    c = self.cfg
    B, K, _ = mem_BxKxD.shape
    F = future_BxF.shape[1]
    if future_emb is not None:
      emb = future_emb
    elif not c.share_embedding:
      emb = self.embed(jnp.maximum(future_BxF, 0))
    elif F == 0:  # the readout: memory tokens only
      emb = jnp.zeros((B, 0, c.d_model), c.residual_dtype)
    else:
      raise ValueError('a decoder with share_embedding needs future_emb (the encoder embeds the future)')
    mem = mem_BxKxD.astype(c.residual_dtype)
    if c.projects_memory:
      mem = self.mem_in(mem).astype(c.residual_dtype)
    h = jnp.concatenate([mem, emb.astype(c.residual_dtype)], axis=1)
    mask = jnp.concatenate([jnp.ones((B, K), bool), future_BxF >= 0], axis=1)[:, None, :]  # keys; causal in Block
    L = K + F
    pos = jnp.broadcast_to(jnp.arange(L), (B, L))
    for blk in self.blocks:
      h = blk(h, pos, mask)
    return self.head(self.norm_out(h[:, K - 1:])).astype(jnp.float32)


class ReferenceTransformer(nn.Module):
  """The plain-Transformer reference (config.method='transformer'): a causal Transformer of the teacher's width
  and total depth (enc_depth + dec_depth blocks) that reads the whole sequence and predicts y_t at every t
  from x_0..x_t, with the teacher's token embedding, blocks and head. It is the teacher without its memory
  bottleneck: what SMT's teacher is compared with, and the model its RNN is meant to replace at inference.
  Logits [B, T, V]."""
  cfg: ModelConfig

  def setup(self):
    c = self.cfg
    self.embed = layers.token_embedding(c)
    block = layers.make_block(c.remat)
    self.blocks = [block(c, causal=True, name=f'block_{i}') for i in range(c.enc_depth + c.dec_depth)]
    self.norm_out = layers.RMSNorm(c.dtype)
    self.head = nn.Dense(c.vocab_size, use_bias=c.use_bias, dtype=c.dtype, kernel_init=nn.initializers.normal(0.02))

  def __call__(self, x_BxT):
    valid, pos, _ = _valid_positions(x_BxT)
    h = self.embed(jnp.maximum(x_BxT, 0)).astype(self.cfg.residual_dtype)
    for blk in self.blocks:
      h = blk(h, pos, valid[:, None, :])  # key padding; causal in Block
    return self.head(self.norm_out(h)).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class Networks:
  """Encoder, decoder and RNN cell bound into pure functions of params = {'encoder','decoder','cell'}
  (+ 'readout' during DMT, + 'init_memory' when the initial memory is learned). Hashable: a static jit
  argument."""
  cfg: ModelConfig
  encoder: Encoder
  decoder: Decoder
  cell: nn.Module
  reference: ReferenceTransformer

  @classmethod
  def from_config(cls, config) -> Networks:
    """The networks of a run's config (config.model, and config.method for the initial memory)."""
    return cls.of(ModelConfig.from_config(config))

  @classmethod
  def of(cls, cfg: ModelConfig) -> Networks:
    """The networks of a resolved architecture (`config.Run.model`)."""
    return cls(cfg, Encoder(cfg), Decoder(cfg), cells.make_cell(cfg), ReferenceTransformer(cfg))

  @property
  def num_mem_tokens(self) -> int:
    return self.cfg.num_mem_tokens

  @property
  def d_model(self) -> int:
    return self.cfg.d_model

  @property
  def mem_dim(self) -> int:
    """D, the width of a memory token."""
    return self.cfg.mem_dim

  @property
  def initial(self) -> str:
    """The RNN's initial memory: 'encoder' (m_{-1} = E(empty)), 'zeros' or 'learned'."""
    return self.cfg.initial_memory

  def init(self, rng) -> dict:
    """Parameters of all three networks (float32)."""
    r_enc, r_dec, r_cell = jax.random.split(rng, 3)
    x = jnp.zeros((1, 2), jnp.int32)
    mem = jnp.zeros((1, self.num_mem_tokens, self.mem_dim), jnp.float32)
    params = {
        'encoder': self.encoder.init(r_enc, x)['params'],
        # A decoder sharing the encoder's embedding has no embedding to create: init it on memories alone.
        'decoder': self.decoder.init(r_dec, mem, x[:, :0] if self.cfg.share_embedding else x)['params'],
        'cell': self.cell.init(r_cell, mem, x[:, 0])['params'],
    }
    if self.initial == 'learned':
      params['init_memory'] = layers.rms_norm(jax.random.normal(r_cell, (self.num_mem_tokens, self.mem_dim)))
    return params

  def init_reference(self, rng) -> dict:
    """Parameters of the plain-Transformer reference alone: {'transformer': ...} (config.method='transformer')."""
    return {'transformer': self.reference.init(rng, jnp.zeros((1, 2), jnp.int32))['params']}

  def reference_logits(self, params, x_BxT):
    """The plain-Transformer reference's logits [B, T, V]: entry t predicts y_t from x_0..x_t."""
    return self.reference.apply({'params': params['transformer']}, x_BxT)

  def encode(self, params, x_BxT):
    """m = E(x): [B, K, D] (float32)."""
    return self.encoder.apply({'params': params['encoder']}, x_BxT).astype(jnp.float32)

  def prefix_memories(self, params, x_BxT, lengths_BxG=None):
    """[B, T+1, K, D]: entry L is the memory of x[:, :L] (entry 0 is the initial memory m_{-1}); with
    `lengths_BxG` [B, G] only those prefixes, [B, G, K, D] (the same numbers at a cost linear in G)."""
    return self.encoder.apply({'params': params['encoder']}, x_BxT, None, lengths_BxG,
                              method=Encoder.prefix_memories).astype(jnp.float32)

  def initial_memory(self, params, batch_size: int):
    """The RNN's initial memory [B, K, D]: m_{-1} = E(empty) (the encoder's memory of an empty prefix),
    zeros, or the learned params['init_memory'] (RMS-normalised), by `initial`."""
    if self.initial == 'zeros':
      return jnp.zeros((batch_size, self.num_mem_tokens, self.mem_dim), jnp.float32)
    if self.initial == 'learned':
      return jnp.broadcast_to(layers.rms_norm(params['init_memory']), (batch_size, self.num_mem_tokens, self.mem_dim))
    return self.encode(params, jnp.full((batch_size, 1), -1, jnp.int32))

  def decode(self, params, mem_BxKxD, future_BxF):
    """Decoder logits [B, F+1, V] (float32). With a shared embedding the future inputs are embedded by
    params['encoder']['embed'] (so the decoder loss trains it too)."""
    emb = None
    if self.cfg.share_embedding:
      emb = self.encoder.apply({'params': params['encoder']}, future_BxF, method=Encoder.embed_tokens)
    return self.decoder.apply({'params': params['decoder']}, mem_BxKxD, future_BxF, emb)

  def step(self, params, mem_BxKxD, x_B):
    """One RNN transition U(m, x) -> m' [B, K, D]; a padding input (-1) leaves the memory unchanged."""
    new = self.cell.apply({'params': params['cell']}, mem_BxKxD, x_B).astype(jnp.float32)
    return jnp.where((x_B >= 0)[:, None, None], new, mem_BxKxD.astype(jnp.float32))

  def readout(self, params, mem_BxKxD):
    """The RNN's readout -> next-target logits [B, V]: the decoder on the memory alone, with the teacher's
    decoder parameters (or the DMT-tuned copy params['readout'] when present)."""
    dec = params.get('readout', params['decoder'])
    return self.decoder.apply({'params': dec}, mem_BxKxD, jnp.zeros((mem_BxKxD.shape[0], 0), jnp.int32))[:, 0]

  def rollout(self, params, mem0_BxKxD, x_BxT, truncation: int = 0, detach_initial: bool = False,
              parallel: bool = False):
    """The RNN from mem0 over every input: memories after each, [B, T, K, D]. The one rollout of the library
    (inference, BPTT, DMT, rolled SMT); they differ in where the gradient stops (the memory a step reads):
      truncation k > 0  no gradient crosses the step boundaries t = k, 2k, ... (k = 1: every step reads a
                        detached memory: DMT without backprop_through_rollout, rolled SMT's rollout_detach);
      detach_initial    step 0 reads a detached mem0 too (DMT: the teacher's memory is a target, not a path);
      parallel          a linear cell's parallel scan over time (`scan_rollout`): the same memories and
                        gradients in O(log T) depth; full gradient only.
    """
    if parallel:
      if truncation or detach_initial:
        raise ValueError('a parallel rollout keeps the full gradient: no truncation or detached initial memory')
      return self.scan_rollout(params, mem0_BxKxD, x_BxT)
    cuts = truncation > 0 or detach_initial

    def body(carry, x_B):
      mem, t = carry
      if cuts:
        cut = ((t > 0) & (t % max(truncation, 1) == 0) & (truncation > 0)) | ((t == 0) & detach_initial)
        mem = jnp.where(cut, jax.lax.stop_gradient(mem), mem)
      new = self.step(params, mem, x_B)
      return (new, t + 1), new

    init = (mem0_BxKxD.astype(jnp.float32), jnp.zeros((), jnp.int32))
    _, mems = jax.lax.scan(body, init, jnp.swapaxes(x_BxT, 0, 1))
    return jnp.swapaxes(mems, 0, 1)

  def scan_rollout(self, params, mem0_BxKxD, x_BxT):
    """The rollout of a linear cell (`registry.is_linear`) as a parallel scan over time: memories after each
    input [B, T, K, D], equal to `rollout`, in O(log T) sequential depth. Every step's (a, b) comes from its
    token alone; padding (x < 0) is the identity step (a = 1, b = 0)."""
    cell = type(self.cell)
    apply = lambda method, *args: self.cell.apply({'params': params['cell']}, *args, method=method)
    B, T = x_BxT.shape
    a, b = apply(cell.coefficients, x_BxT.reshape(B * T))
    pad = (x_BxT.reshape(B * T) < 0)[:, None]
    a, b = jnp.where(pad, jnp.ones((), a.dtype), a), jnp.where(pad, jnp.zeros((), b.dtype), b)
    a, b = a.reshape((B, T) + a.shape[1:]), b.reshape((B, T) + b.shape[1:])

    def combine(first, second):  # apply `first`'s steps, then `second`'s
      return first[0] * second[0], second[0] * first[1] + second[1]

    a_t, b_t = jax.lax.associative_scan(combine, (a, b), axis=1)
    s0 = apply(cell.to_state, mem0_BxKxD.astype(jnp.float32))[:, None]
    return apply(cell.from_state, a_t * s0 + b_t, (B, T) + mem0_BxKxD.shape[1:])

  def readout_all(self, params, mems_BxTxKxD):
    """Readout logits for a sequence of memories: [B, T, V]."""
    B, T = mems_BxTxKxD.shape[:2]
    logits = self.readout(params, mems_BxTxKxD.reshape((B * T,) + mems_BxTxKxD.shape[2:]))
    return logits.reshape(B, T, -1)
