"""Quick, Draw! sketches as pixel sequences (method.md §9), vocabulary 256.

method.md §9 trains 32x32 sketches as sequences of 1024 pixels, one whole image. Our `numpy_bitmap`
drawings are 28x28, so T = 784 (one whole drawing's length) with Tc = 720 and Tf = 64 (the published Tf);
windows are random slices of each category's pixel stream, as for MNIST. The rest is the published
setting of method.md §8. The test split is the last 10% of the drawings of every category.

Variants: '' (published-size model, T=784) and 'small' (2 CPU cores, T=64).

Data: --config.data.path=DIR of `<category>.npy` files; '' looks in $SMTJAX_DATA_DIR/sketch and the
cache, then downloads `options.categories` from the Quick, Draw! bucket (options.download).
"""

from smtjax import variants


def _published():
  c = variants.published('sketch', seq_len=784, context=720, future=64)
  # Comma-separated categories, e.g. 'apple,bicycle,cat': a subset of the directory's files ('' = all),
  # and what is downloaded when no data is found.
  c.data.options.categories = ''
  c.data.options.test_fraction = 0.1
  return c


def get_config(arg: str | None = None):
  return variants.build(arg, 'configs/sketch.py', variants.real_data_sizes(_published))
