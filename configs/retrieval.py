"""Retrieval (needle) task, method.md §10: find the value after a marker and recall it at the last step.

Variants: '' (default: T=64, CPU-sized), 'small' (learns on 2 CPU cores in a few minutes), 'gpu'
(T=512 with label noise 0.3, the length at which the paper reports BPTT failing).
"""

from smtjax.config import default_config, dmt_variant


def get_config(arg: str | None = None):
  c = default_config()
  c.data.name = 'retrieval'
  c.data.seq_len = 64
  c.data.options.num_symbols = 8
  c.data.options.noise = 0.0
  c.model.vocab_size = 10
  c.model.d_model = 64
  c.model.num_heads = 4
  c.model.num_mem_tokens = 2
  c.model.enc_depth = 2
  c.model.dec_depth = 2
  c.model.cell = 'transformer'
  c.model.cell_depth = 2
  c.smt.mode = 'parallel'
  c.smt.future = 64  # sparse targets: decode to the end of the sequence
  c.smt.num_decoder_samples = 2
  c.batch_size = 32
  c.num_steps = 2000
  c.optim.lr = 1e-3
  c.log_every = 25
  c.eval_every = 250
  c.checkpoint_every = 250
  if arg in (None, ''):
    return c
  if arg == 'small':
    # ~2.5 minutes on 2 CPU cores; teacher accuracy 1.0, RNN-only accuracy ~0.8 (see README).
    c.data.seq_len = 12
    c.smt.future = 12
    c.smt.num_decoder_samples = 0  # decode every memory: retrieval has one target per sequence
    c.model.d_model = 32
    c.model.num_heads = 2
    c.optim.lr = 3e-3
    c.batch_size = 32
    c.num_steps = 1000
    c.log_every = 20
    c.eval_every = 200
    c.checkpoint_every = 200
    return c
  if arg == 'small_dmt':  # DMT after `small`: --config.init_from=WORKDIR_OF_THE_SMALL_RUN
    c = get_config('small')
    return dmt_variant(c, context=2, rollout=10, every=5, lr=1e-3, batch_size=32, num_steps=200)
  if arg == 'gpu':
    c.data.seq_len = 512
    c.data.options.noise = 0.3
    c.smt.future = 512
    c.smt.num_transitions = 64
    c.model.d_model = 128
    c.model.num_mem_tokens = 4
    c.model.enc_depth = 4
    c.model.dec_depth = 2
    c.model.cell_depth = 2
    c.num_steps = 20000
    return c
  raise ValueError(f"unknown variant {arg!r} of configs/retrieval.py; known: '', 'small', 'small_dmt', 'gpu'")
