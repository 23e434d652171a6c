"""String copy (memory capacity), method.md §10: a random string, a separator, then the reversed string.

Variants: '' (T=32), 'small' (T=12, 2 CPU cores), 'gpu' (T=128; the paper goes to T=4096 with M=64).
"""

from smtjax.config import synthetic_config


def get_config(arg: str | None = None):
  T = {'': 32, None: 32, 'small': 12, 'gpu': 128}.get(arg, 32)
  c = synthetic_config('copy', T, vocab_size=9, variant=arg, num_symbols=8, reverse=True)
  c.smt.num_decoder_samples = 0 if arg == 'small' else c.smt.num_decoder_samples
  return c
