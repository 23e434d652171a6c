"""String copy (memory capacity), method.md §10: a random string, a separator, then the reversed string.

Sizes: '' (T=32), 'small' (T=12, 2 CPU cores), 'gpu' (T=128; the paper goes to T=4096, see docs/configs.md),
'mem2d' / 'mem3d' (binary strings of length 3, one memory token of width 2 / 3, for
experiments/notebooks/memory_2d.ipynb: the memories of the prefixes read so far should form a tree).
Modifiers and overrides compose (smtjax/variants.py).
"""

from ml_collections import config_dict

from smtjax import variants


def _base(T: int):
  c = variants.synthetic('copy', T, vocab_size=9, num_symbols=8, reverse=True)
  # None: strings of T // 2 symbols, no padding: the public generator's task at every T. A shorter fixed length
  # left-pads the sequence, and padding is masked out of attention and positions: the T = 2 * length task at T's cost.
  c.data.options.length = config_dict.placeholder(int)
  return c


def _mem(width: int):
  c = variants.synthetic('copy', 6, vocab_size=3, num_symbols=2, length=3, reverse=True)
  return variants.narrow_memory(variants.small(c), width)


SIZES = {
    '': lambda: _base(32),
    'small': lambda: variants.small(_base(12)),
    'gpu': lambda: variants.gpu(_base(128)),
    'mem2d': lambda: _mem(2),
    'mem3d': lambda: _mem(3),
}


def get_config(arg: str | None = None):
  return variants.build(arg, 'configs/copy.py', SIZES)
