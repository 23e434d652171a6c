"""Parity (running XOR of bits), from the paper's public generators.

Sizes: '' (T=64), 'small' (T=8: the teacher's causal encoder must compute the XOR of the whole
prefix, which at T=16 it does not learn within a CPU budget, see docs/results.md), 'gpu' (T=512).
Modifiers and overrides compose (smtjax/variants.py).
"""

from smtjax import variants


def _base(T: int):
  c = variants.synthetic('parity', T, vocab_size=2)
  c.smt.future = min(T, 8)
  return c


SIZES = {
    '': lambda: _base(64),
    'small': lambda: variants.small(_base(8)),
    'gpu': lambda: variants.gpu(_base(512)),
}


def get_config(arg: str | None = None):
  return variants.build(arg, 'configs/parity.py', SIZES)
