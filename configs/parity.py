"""Parity (running XOR of bits), from the paper's public generators.

Variants: '' (T=64), 'small' (T=8: the teacher's causal encoder must compute the XOR of the whole
prefix, which at T=16 it does not learn within a CPU budget, see README), 'gpu' (T=512).
"""

from smtjax.config import synthetic_config


def get_config(arg: str | None = None):
  T = {'small': 8, 'gpu': 512}.get(arg, 64)
  c = synthetic_config('parity', T, vocab_size=2, variant=arg)
  c.smt.future = min(T, 8)
  return c
