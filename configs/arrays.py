"""Bring your own sequence task from the command line: a `.npz` with x [N, T] and optionally y [N, T]
(-1 = no target; without y, next-token targets), x_test / y_test (else `options.test_path`, else the last
`options.test_fraction` of the rows):

  python -m experiments.run --config=configs/arrays.py --config.data.path=task.npz

T (`data.seq_len = 0`) is the width of x and the vocabulary (`model.vocab_size = 0`) the largest token + 1
(or `options.vocab_size`); a test file of another length or a token outside the vocabulary is an error
naming the file. The options are exactly the `arrays` source's, so any of them can be set from the
command line. Variants: '' (CPU-sized), 'small' (2 CPU cores), 'gpu' (as the synthetic tasks).
"""

from smtjax import variants


def _base():
  c = variants.synthetic('arrays', 2, vocab_size=1)
  c.data.options.vocab_size = 0  # 0: the largest token + 1
  c.data.options.test_path = ''  # a second .npz for the test split
  c.data.options.test_fraction = 0.1  # without x_test or test_path: the last rows
  c.data.options.decode = 'ids'  # how samples are shown: 'ids' (numbers) or 'bytes' (text)
  c.data.seq_len = 0  # the file's length
  c.model.vocab_size = 0  # the data's vocabulary
  c.smt.future = 16  # capped at T once T is known
  return c


SIZES = {'': _base, 'small': lambda: variants.small(_base()), 'gpu': lambda: variants.gpu(_base())}


def get_config(arg: str | None = None):
  return variants.build(arg, 'configs/arrays.py', SIZES)
