"""Keys-values (associative recall), method.md §10: key/value pairs, then a query key; predict its value.

Variants: '' (4 pairs), 'small' (2 pairs), 'gpu' (16 pairs). T is the exact length the pairs need.
"""

from smtjax.config import synthetic_config


def get_config(arg: str | None = None):
  pairs = {'small': 2, 'gpu': 16}.get(arg, 4)
  key_len, value_len = 2, 1
  T = pairs * (key_len + value_len) + 1 + key_len + value_len - 1
  return synthetic_config('keys_values', T, vocab_size=9, variant=arg, num_pairs=pairs, key_len=key_len,
                          value_len=value_len, num_symbols=8)
