"""Retrieval (needle) task, method.md §10: find the value after a marker and recall it at the last step.

Variants: '' (T=64, CPU-sized), 'small' (T=12: learns on 2 CPU cores in ~2.5 minutes, see README),
'small_dmt' (DMT after 'small': --config.init_from=WORKDIR_OF_THE_SMALL_RUN), 'gpu' (T=512 with label
noise 0.3, the length at which the paper reports BPTT failing), 'mem2d' / 'mem3d' (one memory token of
width 2 / 3 and 4 needle values, for experiments/notebooks/memory_2d.ipynb: the memory should settle
into a few discrete states, one per held value plus "not seen yet").
"""

from smtjax.config import dmt_variant, synthetic_config


def get_config(arg: str | None = None):
  if arg == 'small_dmt':
    return dmt_variant(get_config('small'), context=2, rollout=10, every=5, lr=1e-3, batch_size=32, num_steps=200)
  if arg in ('mem2d', 'mem3d'):
    c = synthetic_config('retrieval', 12, vocab_size=6, variant=arg, num_symbols=4, noise=0.0)
    c.smt.num_decoder_samples = 0
    return c
  T = {'small': 12, 'gpu': 512}.get(arg, 64)
  c = synthetic_config('retrieval', T, vocab_size=10, variant=arg, num_symbols=8, noise=0.3 if arg == 'gpu' else 0.0)
  if arg == 'small':
    c.smt.num_decoder_samples = 0  # decode every memory: retrieval has one target per sequence
  return c
