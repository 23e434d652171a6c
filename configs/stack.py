"""Stack operations (state tracking), method.md §10: push a symbol or pop; on a pop predict the popped one.

Variants: '' (T=64, depth 5, the paper's setting), 'small' (T=16, depth 3), 'gpu' (T=256, depth 5).
"""

from smtjax.config import synthetic_config


def get_config(arg: str | None = None):
  T, depth = {'small': (16, 3), 'gpu': (256, 5)}.get(arg, (64, 5))
  c = synthetic_config('stack', T, vocab_size=9, variant=arg, num_symbols=8, max_depth=depth)
  c.smt.future = min(T, 16)  # dense targets: a short future suffices
  return c
