"""Keys-values (associative recall), method.md §10: key/value pairs, then a query key; predict its value.

Sizes: '' (4 pairs), 'small' (2 pairs), 'gpu' (16 pairs). T is the exact length the pairs need.
Modifiers and overrides compose (smtjax/variants.py).
"""

from smtjax import variants

KEY_LEN, VALUE_LEN = 2, 1


def _base(pairs: int):
  T = pairs * (KEY_LEN + VALUE_LEN) + 1 + KEY_LEN + VALUE_LEN - 1
  return variants.synthetic('keys_values', T, vocab_size=9, num_pairs=pairs, key_len=KEY_LEN,
                            value_len=VALUE_LEN, num_symbols=8)


SIZES = {
    '': lambda: _base(4),
    'small': lambda: variants.small(_base(2)),
    'gpu': lambda: variants.gpu(_base(16)),
}


def get_config(arg: str | None = None):
  return variants.build(arg, 'configs/keys_values.py', SIZES)
