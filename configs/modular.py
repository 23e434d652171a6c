"""Modular arithmetic in context (in-context learning), method.md §10: pairs (a, (w*a+b) mod P).

Variants: '' (P=17, T=32), 'small' (P=5, T=12), 'gpu' (P=97, T=128).
"""

from smtjax.config import synthetic_config


def get_config(arg: str | None = None):
  P, T = {'small': (5, 12), 'gpu': (97, 128)}.get(arg, (17, 32))
  c = synthetic_config('modular', T, vocab_size=P, variant=arg, modulus=P)
  c.smt.future = min(T, 16)
  return c
