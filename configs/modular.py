"""Modular arithmetic in context (in-context learning), method.md §10: pairs (a, (w*a+b) mod P).

Variants: '' (P=17, T=32), 'small' (P=5, T=12, w = 1 and b in {0, 1, 2}, inferred in context: with every
w and b, or even w = 1 and all five offsets, the teacher stays at chance for 1000 steps on a CPU, see
README), 'gpu' (P=97, T=128).
`data.options.num_w` / `num_b` narrow the range of w / b (the task's difficulty knob).
"""

from ml_collections import config_dict

from smtjax.config import synthetic_config


def get_config(arg: str | None = None):
  P, T = {'small': (5, 12), 'gpu': (97, 128)}.get(arg, (17, 32))
  c = synthetic_config('modular', T, vocab_size=P, variant=arg, modulus=P)
  c.data.options.num_w = 1 if arg == 'small' else config_dict.placeholder(int)  # None: every w
  c.data.options.num_b = 3 if arg == 'small' else config_dict.placeholder(int)  # None: every b
  c.smt.future = min(T, 16)
  return c
