"""Index helpers over token sequences, in one place: windows at given starts, padding, the decoder's windows of
future inputs and targets, and sliding windows. Pure jnp functions."""

from __future__ import annotations

import jax.numpy as jnp


def windows(a_BxN, starts, length: int):
  """a[b, s : s + length] for every start s -> [B, S, length]. `starts`: [S] (the same for every row) or
  [B, S] (per row). Starts must keep each window inside the array (pad first)."""
  B = a_BxN.shape[0]
  starts_BxS = jnp.broadcast_to(starts, (B,) + starts.shape[-1:]) if starts.ndim == 1 else starts
  idx = starts_BxS[..., None] + jnp.arange(length)
  return jnp.take_along_axis(a_BxN[:, None, :], idx, axis=-1)


def pad(a_BxN, before: int, after: int, value: int = -1):
  """a with `before` and `after` columns of `value` (padding / no target) around it."""
  B = a_BxN.shape[0]
  return jnp.concatenate([jnp.full((B, before), value, a_BxN.dtype), a_BxN,
                          jnp.full((B, after), value, a_BxN.dtype)], axis=1)


def decoder_windows(x_BxT, y_BxT, read_BxS, future: int):
  """The decoder's inputs for memories that have read `read` tokens (method.md §4): future inputs
  x[n : n+Tf-1] and targets y[n-1 : n+Tf-1] for each n in read_BxS ([S] or [B, S]); past either end of the
  sequence they are -1 (padding / no target). Returns (future inputs [B*S, Tf-1], targets [B*S, Tf])."""
  x_pad = pad(x_BxT, 0, future)
  y_pad = pad(y_BxT, 1, future)  # y_pad[n + j] = y[n - 1 + j]
  inputs = windows(x_pad, read_BxS, future - 1)
  targets = windows(y_pad, read_BxS, future)
  n = x_BxT.shape[0] * read_BxS.shape[-1]  # not -1: with Tf = 1 there are no future inputs to infer it from
  return inputs.reshape(n, future - 1), targets.reshape(n, future)


def sliding_windows(x_BxT, length: int):
  """[B, T, length]: window t is x[:, t-length+1 : t+1], left-padded with -1 before the sequence start."""
  return windows(pad(x_BxT, length - 1, 0), jnp.arange(x_BxT.shape[1]), length)
