"""Retrieval (needle) task, method.md §10: find the value after a marker and recall it at the last step.

Sizes: '' (T=64, CPU-sized), 'small' (T=12: learns on 2 CPU cores in 65-94 s, see docs/benchmarks.md), 'gpu'
(T=512 with label noise 0.3, the length at which the paper reports BPTT failing), 'mem2d' / 'mem3d' (one
memory token of width 2 / 3 and 4 needle values, for experiments/notebooks/memory_2d.ipynb: the memory
should settle into a few discrete states, one per held value plus "not seen yet").
'small_dmt': DMT after 'small' (--config.init_from=WORKDIR_OF_THE_SMALL_RUN). Modifiers and overrides
compose: ':small,gru,bptt', ':small,model.d_model=64' (smtjax/variants.py).
"""

from smtjax import variants


def _base(T: int, **options):
  return variants.synthetic('retrieval', T, vocab_size=10, num_symbols=8, noise=0.0, **options)


def _small(T: int = 12):
  """d=32 at lr 1e-3 decayed to 0 by a cosine (docs/configs.md#training-recipe): at 3e-3 the teacher reaches the
  task hundreds of steps later on some seeds, and at any constant rate the RNN's accuracy still swings between
  evaluations at the end of the run, so its final value is a draw."""
  c = variants.small(_base(T))
  c.optim.lr = 1e-3
  c.optim.schedule = 'cosine'
  return c


def _mem(width: int):
  c = variants.synthetic('retrieval', 12, vocab_size=6, num_symbols=4, noise=0.0)
  return variants.narrow_memory(variants.small(c), width)


SIZES = {
    '': lambda: _base(64),
    'small': _small,
    'gpu': lambda: variants.gpu(variants.synthetic('retrieval', 512, vocab_size=10, num_symbols=8, noise=0.3)),
    'mem2d': lambda: _mem(2),
    'mem3d': lambda: _mem(3),
    'small_dmt': lambda: variants.dmt(_small(), context=2, rollout=10, every=5, lr=1e-3, batch_size=32,
                                      num_steps=200),
}


def get_config(arg: str | None = None):
  return variants.build(arg, 'configs/retrieval.py', SIZES)
