"""MNIST pixel sequences, "Attneave's task" (method.md §8, §9): 784 raster-order intensity bytes per
image, images concatenated, random windows of T=320 (they cross image borders); vocabulary 256.

Variants: '' (the published settings, as for TinyStories) and 'small' (2 CPU cores).

Data: --config.data.path=DIR holding train-images-idx3-ubyte.gz and t10k-images-idx3-ubyte.gz (the test
split); '' looks in $SMTJAX_DATA_DIR/mnist and the cache, then downloads the IDX files (options.download).
"""

from smtjax.config import dmt_variant, published_config, small_real_config

VARIANTS = ('', 'small', 'dmt', 'small_dmt')


def get_config(arg: str | None = None):
  c = published_config('mnist')
  c.data.options.test_path = ''  # another IDX image file for the test split ('' = the t10k file)
  c.data.options.test_fraction = 0.01  # used only when data.path is one file and test_path is ''
  if arg in (None, ''):
    return c
  if arg == 'small':
    return small_real_config(c)
  if arg == 'dmt':  # the published DMT stage: T = 256 + 256 + 64, k = 16
    return dmt_variant(c, context=None, rollout=256, every=16)
  if arg == 'small_dmt':
    return dmt_variant(small_real_config(c), context=None, rollout=32, every=8, lr=3e-4, batch_size=16, num_steps=200)
  raise ValueError(f'unknown variant {arg!r} of configs/mnist.py; known: {", ".join(map(repr, VARIANTS))}')
