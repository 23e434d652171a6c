"""MNIST pixel sequences, "Attneave's task" (method.md §8, §9): 784 raster-order intensity bytes per
image, images concatenated, random windows of T=320 (they cross image borders); vocabulary 256.

Variants: '' (the published settings, as for TinyStories) and 'small' (2 CPU cores).

Data: --config.data.path=DIR holding train-images-idx3-ubyte.gz and t10k-images-idx3-ubyte.gz (the test
split); '' looks in $SMTJAX_DATA_DIR/mnist and the cache, then downloads the IDX files (options.download).
"""

from smtjax import variants


def _published():
  c = variants.published('mnist')
  c.data.options.test_path = ''  # another IDX image file for the test split ('' = the t10k file)
  c.data.options.test_fraction = 0.01  # used only when data.path is one file and test_path is ''
  return c


def get_config(arg: str | None = None):
  return variants.build(arg, 'configs/mnist.py', variants.real_data_sizes(_published))
