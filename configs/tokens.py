"""Bring your own token stream from the command line: a 1-D integer `.npy`; training sequences are random
windows of T+1 tokens, as for text (the test split: `options.test_path`, else the last `test_fraction`):

  python -m experiments.run --config=configs/tokens.py --config.data.path=stream.npy --config.data.seq_len=128

A stream has no sequence length of its own, so T is `data.seq_len` (default 64; a file shorter than a
window is an error naming it); the vocabulary (`model.vocab_size = 0`) is the largest token + 1 (or
`options.vocab_size`). The options are exactly the `tokens` source's. Variants: '', 'small', 'gpu'.
"""

from smtjax import variants


def _base(T: int):
  c = variants.synthetic('tokens', T, vocab_size=1)
  c.data.options.vocab_size = 0  # 0: the largest token + 1
  c.data.options.test_path = ''  # a second .npy for the test split
  c.data.options.test_fraction = 0.01
  c.data.options.decode = 'ids'  # 'ids' (numbers) or 'bytes' (text)
  c.model.vocab_size = 0  # the data's vocabulary
  c.smt.future = min(T, 16)  # dense next-token targets: a short future suffices
  return c


SIZES = {'': lambda: _base(64), 'small': lambda: variants.small(_base(32)), 'gpu': lambda: variants.gpu(_base(512))}


def get_config(arg: str | None = None):
  return variants.build(arg, 'configs/tokens.py', SIZES)
