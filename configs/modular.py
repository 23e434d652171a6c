"""Modular arithmetic in context (in-context learning), method.md §10: pairs (a, (w*a+b) mod P).

Sizes: '' (P=17, T=32), 'small' (P=5, T=12, w = 1 and b in {0, 1, 2}, inferred in context: with every
w and b, or even w = 1 and all five offsets, the teacher stays at chance for 1000 steps on a CPU, see
docs/results.md), 'gpu' (P=97, T=128). Modifiers and overrides compose (smtjax/variants.py).
`data.options.num_w` / `num_b` narrow the range of w / b (the task's difficulty knob).
"""

from ml_collections import config_dict

from smtjax import variants


def _base(P: int, T: int):
  c = variants.synthetic('modular', T, vocab_size=P, modulus=P)
  c.data.options.num_w = config_dict.placeholder(int)  # None: every w
  c.data.options.num_b = config_dict.placeholder(int)  # None: every b
  c.smt.future = min(T, 16)
  return c


def _small():
  c = variants.small(_base(5, 12))
  c.data.options.num_w, c.data.options.num_b = 1, 3
  return c


SIZES = {
    '': lambda: _base(17, 32),
    'small': _small,
    'gpu': lambda: variants.gpu(_base(97, 128)),
}


def get_config(arg: str | None = None):
  return variants.build(arg, 'configs/modular.py', SIZES)
