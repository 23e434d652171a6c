"""Quick, Draw! sketches as pixel sequences (method.md §9), vocabulary 256.

method.md §9 trains 32x32 sketches as sequences of 1024 pixels, one whole image. Our `numpy_bitmap`
drawings are 28x28, so T = 784 (one whole drawing's length) with Tc = 720 and Tf = 64 (the published Tf);
windows are random slices of each category's pixel stream, as for MNIST. The rest is the published
setting of method.md §8. The test split is the last 10% of the drawings of every category.

Variants: '' (published-size model, T=784) and 'small' (2 CPU cores, T=64).

Data: --config.data.path=DIR of `<category>.npy` files; '' looks in $SMTJAX_DATA_DIR/sketch and the
cache, then downloads `options.categories` from the Quick, Draw! bucket (options.download).
"""

from smtjax.config import default_config

VARIANTS = ('', 'small')


def published(c, name: str, seq_len: int = 320, context: int = 256, future: int = 64):
  """The published SMT settings of method.md §8 (the same in configs/tinystories.py, mnist.py, sketch.py)."""
  c.data.name = name
  c.data.seq_len = seq_len
  c.model.vocab_size = 256
  c.model.d_model = 256
  c.model.num_mem_tokens = 16  # K; Z = K*d = 4096
  c.model.num_heads = 8
  c.model.enc_depth = 8
  c.model.dec_depth = 4
  c.model.cell = 'transformer'
  c.model.cell_depth = 8
  c.model.dtype = 'bfloat16'
  c.smt.mode = 'window'
  c.smt.context = context
  c.smt.future = future
  c.optim.lr = 3e-4
  c.optim.b1, c.optim.b2 = 0.9, 0.95
  c.optim.weight_decay = 0.01
  c.optim.warmup_frac = 0.01
  c.optim.schedule = 'constant'
  c.optim.grad_clip = 1.0
  c.batch_size = 128
  c.num_steps = 150_000
  c.log_every = 100
  c.eval_every = 5000
  c.checkpoint_every = 5000
  c.num_eval_batches = 16
  # Every option of the real sources exists here, so `--config.data.options.X=...` works under lock_config.
  c.data.options.cache_dir = ''  # '' = $SMTJAX_CACHE or ~/.cache/smtjax
  c.data.options.download = True  # fetch into the cache when data.path is '' and nothing is found
  c.data.options.download_timeout = 10.0  # seconds without a reply before a download fails
  return c


def small(c, seq_len: int = 64, context: int = 48, future: int = 16):
  """A tiny float32 variant for 2 CPU cores (minutes, not hours)."""
  c.data.seq_len = seq_len
  c.smt.context = context
  c.smt.future = future
  c.model.d_model = 64
  c.model.num_heads = 4
  c.model.num_mem_tokens = 4
  c.model.enc_depth = 2
  c.model.dec_depth = 2
  c.model.cell_depth = 2
  c.model.dtype = 'float32'
  c.batch_size = 16
  c.num_steps = 300
  c.log_every = 20
  c.eval_every = 100
  c.checkpoint_every = 100
  c.num_eval_batches = 4
  c.optim.lr = 1e-3
  return c


def get_config(arg: str | None = None):
  c = published(default_config(), 'sketch', seq_len=784, context=720, future=64)
  # Comma-separated categories, e.g. 'apple,bicycle,cat': a subset of the directory's files ('' = all),
  # and what is downloaded when no data is found.
  c.data.options.categories = ''
  c.data.options.test_fraction = 0.1
  if arg in (None, ''):
    return c
  if arg == 'small':
    return small(c)
  raise ValueError(f'unknown variant {arg!r} of configs/sketch.py; known: {", ".join(map(repr, VARIANTS))}')
