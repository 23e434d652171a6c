"""Parity (running XOR of bits), from the paper's public generators. Variants: '', 'small', 'gpu'."""

from smtjax.config import synthetic_config


def get_config(arg: str | None = None):
  T = {'small': 16, 'gpu': 512}.get(arg, 64)
  c = synthetic_config('parity', T, vocab_size=2, variant=arg)
  c.smt.future = min(T, 8)
  return c
