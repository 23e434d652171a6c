"""Quick, Draw! sketches as pixel sequences (method.md §9), vocabulary 256.

method.md §9 trains 32x32 sketches as sequences of 1024 pixels, one whole image. Our `numpy_bitmap`
drawings are 28x28, so T = 784 (one whole drawing's length) with Tc = 720 and Tf = 64 (the published Tf);
windows are random slices of each category's pixel stream, as for MNIST. The rest is the published
setting of method.md §8. The test split is the last 10% of the drawings of every category.

Variants: '' (published-size model, T=784) and 'small' (2 CPU cores, T=64).

Data: --config.data.path=DIR of `<category>.npy` files; '' looks in $SMTJAX_DATA_DIR/sketch and the
cache, then downloads `options.categories` from the Quick, Draw! bucket (options.download).
"""

from smtjax.config import dmt_variant, published_config, small_real_config

VARIANTS = ('', 'small', 'dmt', 'small_dmt')


def get_config(arg: str | None = None):
  c = published_config('sketch', seq_len=784, context=720, future=64)
  # Comma-separated categories, e.g. 'apple,bicycle,cat': a subset of the directory's files ('' = all),
  # and what is downloaded when no data is found.
  c.data.options.categories = ''
  c.data.options.test_fraction = 0.1
  if arg in (None, ''):
    return c
  if arg == 'small':
    return small_real_config(c)
  if arg == 'dmt':  # the published DMT stage: T = 256 + 256 + 64, k = 16
    return dmt_variant(c, context=None, rollout=256, every=16)
  if arg == 'small_dmt':
    return dmt_variant(small_real_config(c), context=None, rollout=32, every=8, lr=3e-4, batch_size=16, num_steps=200)
  raise ValueError(f'unknown variant {arg!r} of configs/sketch.py; known: {", ".join(map(repr, VARIANTS))}')
