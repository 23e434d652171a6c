"""Retrieval (needle) task, method.md §10: find the value after a marker and recall it at the last step.

Variants: '' (T=64, CPU-sized), 'small' (T=12: learns on 2 CPU cores in ~2.5 minutes, see README),
'small_dmt' (DMT after 'small': --config.init_from=WORKDIR_OF_THE_SMALL_RUN), 'gpu' (T=512 with label
noise 0.3, the length at which the paper reports BPTT failing).
"""

from smtjax.config import dmt_variant, synthetic_config


def get_config(arg: str | None = None):
  if arg == 'small_dmt':
    return dmt_variant(get_config('small'), context=2, rollout=10, every=5, lr=1e-3, batch_size=32, num_steps=200)
  T = {'small': 12, 'gpu': 512}.get(arg, 64)
  c = synthetic_config('retrieval', T, vocab_size=10, variant=arg, num_symbols=8, noise=0.3 if arg == 'gpu' else 0.0)
  if arg == 'small':
    c.smt.num_decoder_samples = 0  # decode every memory: retrieval has one target per sequence
  return c
