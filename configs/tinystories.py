"""TinyStories at the character level (method.md §8, §9): ASCII bytes, vocabulary 256.

Variants: '' (the published settings: T=320, Tc=256, Tf=64, d=256, K=16, batch 128, 150k steps, bf16;
about 9 hours on one H200) and 'small' (a tiny float32 model that trains on 2 CPU cores).

Data: --config.data.path=FILE_OR_DIR (a `.txt` file, or a directory holding `*train*` and `*valid*`
`.txt` files); '' looks in $SMTJAX_DATA_DIR/tinystories and the cache, then downloads the official
release from the Hugging Face hub (options.download).
"""

from smtjax.config import dmt_variant, published_config, small_real_config

VARIANTS = ('', 'small', 'dmt', 'small_dmt')


def get_config(arg: str | None = None):
  c = published_config('tinystories')
  c.data.options.test_path = ''  # a second text file for the test split ('' = *valid* files or the last 1%)
  c.data.options.test_fraction = 0.01
  c.data.options.endoftext = ''  # replaces each <|endoftext|> marker ('' leaves a blank line between stories)
  if arg in (None, ''):
    return c
  if arg == 'small':
    return small_real_config(c)
  if arg == 'dmt':  # the published DMT stage: T = 256 + 256 + 64, k = 16
    return dmt_variant(c, context=None, rollout=256, every=16)
  if arg == 'small_dmt':
    return dmt_variant(small_real_config(c), context=None, rollout=32, every=8, lr=3e-4, batch_size=16, num_steps=200)
  raise ValueError(f'unknown variant {arg!r} of configs/tinystories.py; known: {", ".join(map(repr, VARIANTS))}')
