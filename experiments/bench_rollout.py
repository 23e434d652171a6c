r"""Rollout benchmarks, on one device:

1. One DMT iteration (forward + backward of the whole DMT loss) with the rollout as `lax.scan`, against
   the same iteration done step by step: a Python loop over the Td rollout steps, each a jitted call of
   the cell's step and its one-step gradient (as the public implementation's loop does). Reports the ratio.
2. One BPTT train step against one parallel-SMT train step at equal model, batch and length, for several
   T: SMT's time-parallelism shows as a ratio growing with T.
3. (--scan) One BPTT train step of each linear cell (minGRU, LRU) as a parallel scan over time against the
   same step as a sequential `lax.scan`, for T in --scan_lengths.

  python -m experiments.bench_rollout                     # CPU-sized defaults
  python -m experiments.bench_rollout --paper             # the one-command check at the published sizes (GPU)
  python -m experiments.bench_rollout --scan --scan_lengths=64,256,1024,4096

--paper: d=256, K=16, depths 8/4/8, bf16, remat, batch 32; DMT Tc=256, Td=256, k=16, Tf=64; BPTT vs SMT at
T=1024 (chunked prefix groups). Goals: loop/scan >= 10x, BPTT/SMT at T=1024 >= 10x.
"""

from absl import app, flags, logging

from experiments import _cli  # noqa: F401 -- JAX options as flags (--jax_log_compiles)
from smtjax import benchmarks

flags.DEFINE_integer('d_model', 64, 'Model width (published: 256).')
flags.DEFINE_integer('num_mem_tokens', 4, 'K (published: 16).')
flags.DEFINE_integer('depth', 2, 'Encoder/decoder/cell depth (published: 8/4/8).')
flags.DEFINE_integer('batch', 8, 'Batch size (published DMT: 32).')
flags.DEFINE_integer('dmt_context', 64, 'Tc (published: 256).')
flags.DEFINE_integer('dmt_rollout', 64, 'Td (published: 256).')
flags.DEFINE_integer('dmt_every', 16, 'k (published: 16).')
flags.DEFINE_integer('future', 16, 'Tf (published: 64).')
flags.DEFINE_list('lengths', ['64', '256', '1024'], 'Sequence lengths for BPTT vs SMT.')
flags.DEFINE_integer('repeats', 3, 'Timed repeats (median reported).')
flags.DEFINE_bool('paper', False, 'Published sizes (overrides the size flags above); bf16, remat.')
flags.DEFINE_integer('dec_depth', 0, 'Decoder depth (0: --depth).')
flags.DEFINE_string('dtype', 'float32', 'Computation dtype.')
flags.DEFINE_bool('remat', False, 'Rematerialise Transformer blocks.')
flags.DEFINE_integer('prefix_chunk', 0, 'Parallel SMT: register groups per chunk (0: all at once).')
flags.DEFINE_bool('scan', False, 'Only benchmark 3: parallel-scan against sequential BPTT of the linear cells.')
flags.DEFINE_list('scan_lengths', ['64', '256', '1024', '4096'], 'Sequence lengths of benchmark 3.')
FLAGS = flags.FLAGS

# The flags that set a field of benchmarks.RolloutSizes, as named there.
SIZE_FLAGS = ('d_model', 'num_mem_tokens', 'depth', 'dec_depth', 'batch', 'dmt_context', 'dmt_rollout', 'dmt_every',
              'future', 'dtype', 'remat', 'prefix_chunk', 'repeats')


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  sizes = benchmarks.RolloutSizes(lengths=tuple(int(t) for t in FLAGS.lengths),
                                  **{name: FLAGS[name].value for name in SIZE_FLAGS})
  benchmarks.rollout(sizes, FLAGS.paper, [int(t) for t in FLAGS.scan_lengths] if FLAGS.scan else ())


if __name__ == '__main__':
  app.run(main)
