"""Modular counting (state tracking): random increments in [0, m), predict the running sum mod m, at every
step ('every', dense targets) or only at the last ('last', sparse: `:sparse`). A nonlinear RNN tracks the count
with m states; a linear recurrence (mingru, lru) cannot represent it exactly (Merrill et al. 2024).

Sizes: '' (m=5, T=64), 'small' (m=3, T=16, 2 CPU cores), 'gpu' (m=5, T=256). Modifiers: 'sparse' (a target at
the last step only), and the common ones ('bptt', 'gru', ...; smtjax/variants.py).
"""

from smtjax import variants


def _base(T: int, m: int):
  c = variants.synthetic('counting', T, vocab_size=m, modulus=m, targets='every')
  c.smt.future = min(T, 8)  # dense targets: a short future suffices
  return c


def _small(c):
  # Four memory tokens, not two: at two, 3 of 5 seeds stall or lag within 1000 steps (teacher 0.56-0.78); at four,
  # 4 of 5 reach 0.95-0.97 and the fifth is still rising (docs/results.md, "Every task's small variant").
  c = variants.small(c)
  c.model.num_mem_tokens = 4
  return c


def _sparse(c):
  c.data.options.targets = 'last'
  c.smt.future = c.data.seq_len  # one target at the end: decode to the end of the sequence
  return c


SIZES = {
    '': lambda: _base(64, 5),
    'small': lambda: _small(_base(16, 3)),
    'gpu': lambda: variants.gpu(_base(256, 5)),
}


def get_config(arg: str | None = None):
  return variants.build(arg, 'configs/counting.py', SIZES, modifiers={'sparse': _sparse})
