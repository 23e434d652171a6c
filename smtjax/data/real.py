"""Real datasets (their names are in smtjax.data.registry), and their helpers in one namespace.

| data.name     | data.path                                                      | tokens                     |
| ------------- | -------------------------------------------------------------- | -------------------------- |
| `tinystories` | `.txt` file, or a directory (`*train*` + `*valid*` files)       | ASCII bytes, vocab 256     |
| `mnist`       | directory with `train-images-idx3-ubyte.gz`, `t10k-images-...`  | raster pixels, vocab 256   |
| `sketch`      | directory of Quick, Draw! `numpy_bitmap` `<category>.npy` files | raster pixels, vocab 256   |
| `tokens`      | a 1-D integer `.npy` token stream                               | as given                   |
| `arrays`      | a `.npz` with `x` [N, T] and optionally `y` [N, T] (-1 = none)  | as given                   |

With `data.path = ''`, tinystories, mnist and sketch look in `$SMTJAX_DATA_DIR/<name>`, then in the cache
(`options.cache_dir`, else `$SMTJAX_CACHE`, else `~/.cache/smtjax`), then download into the cache
(`options.download`, default True) or stop with a DataError that says how to provide the data.
Tokenised files are cached as flat uint8 arrays under `<cache>/tokens/` and memory-mapped.
"""

from smtjax.data import arrays, download, images, stream, text  # noqa: F401
from smtjax.data.arrays import decode_ids  # noqa: F401
from smtjax.data.images import decode_image, encode_images, idx_shape, read_idx  # noqa: F401
from smtjax.data.stream import WindowSource, cache_root, cached_tokens  # noqa: F401
from smtjax.data.text import decode_text, encode_text  # noqa: F401
