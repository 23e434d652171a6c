"""Stack operations (state tracking), method.md §10: push a symbol or pop; on a pop predict the popped one.

Sizes: '' (T=64, depth 5, the paper's setting), 'small' (T=16, depth 3), 'gpu' (T=256, depth 5).
Modifiers and overrides compose (smtjax/variants.py).
"""

from smtjax import variants


def _base(T: int, depth: int):
  c = variants.synthetic('stack', T, vocab_size=9, num_symbols=8, max_depth=depth)
  c.smt.future = min(T, 16)  # dense targets: a short future suffices
  return c


SIZES = {
    '': lambda: _base(64, 5),
    'small': lambda: variants.small(_base(16, 3)),
    'gpu': lambda: variants.gpu(_base(256, 5)),
}


def get_config(arg: str | None = None):
  return variants.build(arg, 'configs/stack.py', SIZES)
