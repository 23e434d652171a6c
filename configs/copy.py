"""String copy (memory capacity), method.md §10: a random string, a separator, then the reversed string.

Variants: '' (T=32), 'small' (T=12, 2 CPU cores), 'gpu' (T=128; the paper goes to T=4096 with M=64),
'mem2d' / 'mem3d' (binary strings of length 3, one memory token of width 2 / 3, for
experiments/notebooks/memory_2d.ipynb: the memories of the prefixes read so far should form a tree).
"""

from ml_collections import config_dict

from smtjax.config import synthetic_config


def get_config(arg: str | None = None):
  if arg in ('mem2d', 'mem3d'):
    c = synthetic_config('copy', 6, vocab_size=3, variant=arg, num_symbols=2, length=3, reverse=True)
    c.smt.num_decoder_samples = 0
    return c
  T = {'': 32, None: 32, 'small': 12, 'gpu': 128}.get(arg, 32)
  c = synthetic_config('copy', T, vocab_size=9, variant=arg, num_symbols=8, reverse=True)
  # None: strings of T // 2 symbols at any T; --config.data.options.length=64 fixes M (the paper's long copies)
  c.data.options.length = config_dict.placeholder(int)
  c.smt.num_decoder_samples = 0 if arg == 'small' else c.smt.num_decoder_samples
  return c
