"""Stack operations (state tracking), method.md §10: push a symbol or pop; on a pop predict the popped one.

Sizes: '' (T=64, depth 5, the paper's setting), 'small' (T=16, depth 3), 'gpu' (T=256, depth 5).
Modifiers and overrides compose (smtjax/variants.py).
"""

from smtjax import variants


def _base(T: int, depth: int):
  # The future runs to the end of the sequence (variants.synthetic): a pushed symbol can wait most of the
  # sequence for its pop, so a shorter window leaves pops without a target within the memory's reach.
  return variants.synthetic('stack', T, vocab_size=9, num_symbols=8, max_depth=depth)


SIZES = {
    '': lambda: _base(64, 5),
    'small': lambda: variants.small(_base(16, 3)),
    'gpu': lambda: variants.gpu(_base(256, 5)),
}


def get_config(arg: str | None = None):
  return variants.build(arg, 'configs/stack.py', SIZES)
