"""TinyStories at the character level (method.md §8, §9): ASCII bytes, vocabulary 256.

Variants: '' (the published settings: T=320, Tc=256, Tf=64, d=256, K=16, batch 128, 150k steps, bf16;
about 9 hours on one H200) and 'small' (a tiny float32 model that trains on 2 CPU cores).

Data: --config.data.path=FILE_OR_DIR (a `.txt` file, or a directory holding `*train*` and `*valid*`
`.txt` files); '' looks in $SMTJAX_DATA_DIR/tinystories and the cache, then downloads the official
release from the Hugging Face hub (options.download).
"""

from smtjax import variants


def _published():
  c = variants.published('tinystories')
  c.data.options.test_path = ''  # a second text file for the test split ('' = *valid* files or the last 1%)
  c.data.options.test_fraction = 0.01
  c.data.options.endoftext = ''  # replaces each <|endoftext|> marker ('' leaves a blank line between stories)
  return c


def get_config(arg: str | None = None):
  return variants.build(arg, 'configs/tinystories.py', variants.real_data_sizes(_published))
