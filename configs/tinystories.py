"""TinyStories at the character level (method.md §8, §9): ASCII bytes, vocabulary 256.

Variants: '' (the published settings: T=320, Tc=256, Tf=64, d=256, K=16, batch 128, 150k steps, bf16;
about 9 hours on one H200) and 'small' (a tiny float32 model that trains on 2 CPU cores).

Data: --config.data.path=FILE_OR_DIR (a `.txt` file, or a directory holding `*train*` and `*valid*`
`.txt` files); '' looks in $SMTJAX_DATA_DIR/tinystories and the cache, then downloads the official
release from the Hugging Face hub (options.download).
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
  c = published(default_config(), 'tinystories')
  c.data.options.test_path = ''  # a second text file for the test split ('' = *valid* files or the last 1%)
  c.data.options.test_fraction = 0.01
  c.data.options.endoftext = ''  # replaces each <|endoftext|> marker ('' leaves a blank line between stories)
  if arg in (None, ''):
    return c
  if arg == 'small':
    return small(c)
  raise ValueError(f'unknown variant {arg!r} of configs/tinystories.py; known: {", ".join(map(repr, VARIANTS))}')
