r"""Input-pipeline speed alone: BatchIterator over TinyStories at the published shape (128 x 320, windows of 321).

  python experiments/bench_data.py [--data_dir=../shared/data/tinystories] [--batch_size=128 --seq_len=320]

Prints batches/s, sequences/s and tokens/s (median of --repeats runs of --batches batches, after
--warmup batches and the token-cache build). For reference it also prints the rate the published run
consumes (150k steps in about 9 hours on one H200, method.md §8), which the pipeline should beat 10x;
pass --train_steps_per_s to compare with a train step measured on this machine instead.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: `python experiments/bench_data.py`
  sys.path.insert(0, str(ROOT))

import ml_collections  # noqa: E402

from smtjax.data import make_source  # noqa: E402
from smtjax.data.pipeline import BatchIterator  # noqa: E402

PUBLISHED_STEPS_PER_S = 150_000 / (9 * 3600)


def default_data_dir() -> str:
  shared = os.environ.get('SMTJAX_SHARED_DATA') or str(ROOT.parent / 'shared' / 'data')
  return os.environ.get('SMTJAX_BENCH_DATA') or os.path.join(shared, 'tinystories')


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--data_dir', default=default_data_dir(),
                 help='TinyStories .txt file or directory '
                      '(default: $SMTJAX_BENCH_DATA, else $SMTJAX_SHARED_DATA/tinystories)')
  p.add_argument('--cache_dir', default='', help="token cache ('' = $SMTJAX_CACHE, else a temporary directory)")
  p.add_argument('--batch_size', type=int, default=128)
  p.add_argument('--seq_len', type=int, default=320)
  p.add_argument('--prefetch', type=int, default=2)
  p.add_argument('--batches', type=int, default=100, help='batches per timed run')
  p.add_argument('--repeats', type=int, default=5)
  p.add_argument('--warmup', type=int, default=10)
  p.add_argument('--train_steps_per_s', type=float, default=0.0, help='a measured train-step rate to compare with')
  args = p.parse_args()

  tmp = None
  cache_dir = args.cache_dir or os.environ.get('SMTJAX_CACHE', '')
  if not cache_dir:
    tmp = tempfile.TemporaryDirectory(prefix='smtjax-bench-')
    cache_dir = tmp.name
  c = ml_collections.ConfigDict(dict(name='tinystories', seq_len=args.seq_len, path=args.data_dir,
                                     options=dict(cache_dir=cache_dir, download=False)))
  t0 = time.perf_counter()
  source = make_source(c, seed=0)
  print(f'source: {args.data_dir} ({source.num_tokens("train"):,} train tokens; cache ready in '
        f'{time.perf_counter() - t0:.2f}s, {cache_dir})')
  it = BatchIterator(source, 'train', args.batch_size, prefetch=args.prefetch)
  for _ in range(args.warmup):
    b = next(it)
  assert b['x'].shape == (args.batch_size, args.seq_len), b['x'].shape
  rates = []
  for _ in range(args.repeats):
    t = time.perf_counter()
    for _ in range(args.batches):
      next(it)
    rates.append(args.batches / (time.perf_counter() - t))
  r = statistics.median(rates)
  print(f'pipeline alone, batch {args.batch_size} x {args.seq_len} (windows of {args.seq_len + 1}), '
        f'prefetch {args.prefetch}, {os.cpu_count()} CPUs, median of {args.repeats} x {args.batches} batches:')
  seqs = r * args.batch_size
  print(f'  {r:.1f} batches/s   {seqs:,.0f} sequences/s   {seqs * args.seq_len:,.0f} tokens/s')
  print(f'  (runs: {", ".join(f"{x:.1f}" for x in rates)} batches/s)')
  need, what = (args.train_steps_per_s, 'the measured train step') if args.train_steps_per_s else \
      (PUBLISHED_STEPS_PER_S, 'the published run (150k steps in ~9 h on one H200)')
  print(f'  {r / need:.1f}x what {what} consumes ({need:.2f} batches/s); the target is >= 10x')
  if tmp is not None:
    tmp.cleanup()


if __name__ == '__main__':
  main()
