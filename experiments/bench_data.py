r"""Input-pipeline speed alone: BatchIterator over TinyStories at the published shape (128 x 320, windows of 321).

  python experiments/bench_data.py [--data_dir=../shared/data/tinystories] [--batch_size=128 --seq_len=320]

Prints batches/s, sequences/s and tokens/s (median of --repeats runs of --batches batches, after
--warmup batches and the token-cache build). For reference it also prints the rate the published run
consumes (150k steps in about 9 hours on one H200, method.md §8), which the pipeline should beat 10x;
pass --train_steps_per_s to compare with a train step measured on this machine instead.
"""

import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: `python experiments/bench_data.py`
  sys.path.insert(0, str(ROOT))

from absl import app, flags  # noqa: E402

from experiments import _cli  # noqa: E402
from smtjax import benchmarks  # noqa: E402


def default_data_dir() -> str:
  shared = os.environ.get('SMTJAX_SHARED_DATA') or str(ROOT.parent / 'shared' / 'data')
  return os.environ.get('SMTJAX_BENCH_DATA') or os.path.join(shared, 'tinystories')


FLAGS = flags.FLAGS
flags.DEFINE_string('data_dir', default_data_dir(), 'TinyStories .txt file or directory '
                    '(default: $SMTJAX_BENCH_DATA, else $SMTJAX_SHARED_DATA/tinystories)')
flags.DEFINE_string('cache_dir', '', "token cache ('' = $SMTJAX_CACHE, else a temporary directory)")
flags.DEFINE_integer('batch_size', 128, 'batch size')
flags.DEFINE_integer('seq_len', 320, 'sequence length')
flags.DEFINE_integer('prefetch', 2, 'batches prefetched')
flags.DEFINE_integer('batches', 100, 'batches per timed run')
flags.DEFINE_integer('repeats', 5, 'timed runs; the median is reported')
flags.DEFINE_integer('warmup', 10, 'batches before the timed runs')
flags.DEFINE_float('train_steps_per_s', 0.0, 'a measured train-step rate to compare with')


def main(argv):
  _cli.start(argv)
  benchmarks.pipeline_rate(FLAGS.data_dir, FLAGS.cache_dir, FLAGS.batch_size, FLAGS.seq_len, FLAGS.prefetch,
                           FLAGS.batches, FLAGS.repeats, FLAGS.warmup, FLAGS.train_steps_per_s)


if __name__ == '__main__':
  app.run(main)
