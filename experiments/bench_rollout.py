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

import statistics
import time

import jax
import jax.numpy as jnp
from absl import app, flags, logging

from experiments import _cli  # noqa: F401 -- JAX options as flags (--jax_log_compiles)
from smtjax import config as config_lib
from smtjax import dmt, losses, variants
from smtjax import sharding as shard_lib
from smtjax.data import make_source
from smtjax.data.pipeline import BatchIterator
from smtjax.train import Trainer

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


def _median_time(fn, repeats):
  jax.block_until_ready(fn())  # compile / warm up
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def _config(method, T):
  c = config_lib.default_config()
  c.data.name, c.data.seq_len = 'copy', T
  c.data.options.num_symbols = 8
  c.model.vocab_size = 9
  c.model.d_model, c.model.num_mem_tokens = FLAGS.d_model, FLAGS.num_mem_tokens
  c.model.num_heads = max(1, FLAGS.d_model // 32)
  c.model.enc_depth = c.model.dec_depth = c.model.cell_depth = FLAGS.depth
  c.model.dec_depth = FLAGS.dec_depth or FLAGS.depth
  c.model.dtype, c.model.remat, c.model.prefix_chunk = FLAGS.dtype, FLAGS.remat, FLAGS.prefix_chunk
  c.batch_size = FLAGS.batch
  c.method = method
  c.smt.future = FLAGS.future
  c.smt.mode = 'parallel'
  return c


def bench_dmt():
  c = variants.dmt(_config('smt', FLAGS.dmt_context + FLAGS.dmt_rollout + FLAGS.future),
                             FLAGS.dmt_context, FLAGS.dmt_rollout, FLAGS.dmt_every, batch_size=FLAGS.batch)
  trainer = Trainer.create(c, jax.devices()[:1])
  nets = trainer.nets
  params = trainer.init_state(jax.random.PRNGKey(0)).params
  src = make_source(c.data, 0)
  batch = shard_lib.global_batch(next(BatchIterator(src, 'train', c.batch_size, prefetch=0)), trainer.batch_sharding)
  rng = jax.random.PRNGKey(0)

  scan_iter = jax.jit(jax.grad(lambda p: dmt.dmt_losses(nets, p, batch, rng, c)[0]))

  Tc, Td, k = c.dmt.context, c.dmt.rollout, c.dmt.every
  teacher = jax.jit(lambda p: dmt.teacher_memories(nets, p, batch['x'], Tc, Td, k, prefix=True))

  @jax.jit
  def one_step(p, mem, x_B, y_B, target, has_target):
    """Step s of the loop version: next memory, and the gradient of its memory + readout losses."""
    def loss(p):
      new = nets.step(p, mem, x_B)
      l_mem = jnp.where(has_target, losses.dynamics_loss(new, target), 0.0)
      return c.dmt.coef_mem * l_mem + losses.mean_cross_entropy(nets.readout(p, jax.lax.stop_gradient(new)), y_B), new
    g, new = jax.grad(loss, has_aux=True)(p)
    return jax.lax.stop_gradient(new), g

  def loop_iter():
    targets = teacher(params)
    mem, total = targets[:, 0], None
    for s in range(Td):  # the Python loop over time that the scan replaces
      has = (s + 1) % k == 0
      tgt = targets[:, (s + 1) // k] if has else targets[:, 0]
      mem, g = one_step(params, mem, batch['x'][:, Tc + s], batch['y'][:, Tc + s], tgt, has)
      total = g if total is None else jax.tree.map(jnp.add, total, g)
    return total

  t_scan = _median_time(lambda: scan_iter(params), FLAGS.repeats)
  t_loop = _median_time(loop_iter, FLAGS.repeats)
  print(f'DMT iteration (B={FLAGS.batch}, Tc={Tc}, Td={Td}, k={k}, Tf={c.smt.future}, d={FLAGS.d_model}, '
        f'K={FLAGS.num_mem_tokens}, depth {FLAGS.depth}): scan {1e3 * t_scan:.1f} ms, '
        f'Python loop {1e3 * t_loop:.1f} ms, loop/scan = {t_loop / t_scan:.1f}x (goal >= 10x)', flush=True)
  print('  (the loop version computes only the memory and readout terms; the scan version the whole DMT loss)')


def bench_bptt_vs_smt():
  print(f'BPTT vs parallel SMT train step (B={FLAGS.batch}, d={FLAGS.d_model}, K={FLAGS.num_mem_tokens}, '
        f'depth {FLAGS.depth}, the default sampling: at most {config_lib.default_config().smt.num_transitions} '
        f'transitions and {config_lib.default_config().smt.num_decoder_samples} decoded memories per sequence):')
  for T in map(int, FLAGS.lengths):
    times = {}
    for method in ('bptt', 'smt'):
      c = _config(method, T)
      trainer = Trainer.create(c, jax.devices()[:1])
      state = trainer.init_state(jax.random.PRNGKey(0))
      batch = shard_lib.global_batch(next(BatchIterator(make_source(c.data, 0), 'train', c.batch_size, prefetch=0)),
                                     trainer.batch_sharding)
      holder = [state]

      def run(trainer=trainer, batch=batch, holder=holder):
        holder[0], m = trainer.train_step(holder[0], batch, jax.random.PRNGKey(0))
        return m
      times[method] = _median_time(run, FLAGS.repeats)
    print(f'  T={T:5d}: BPTT {1e3 * times["bptt"]:9.1f} ms | SMT {1e3 * times["smt"]:9.1f} ms | '
          f'BPTT/SMT = {times["bptt"] / times["smt"]:.2f}' + (' (goal at T=1024: >= 10x)' if T == 1024 else ''),
          flush=True)


def bench_parallel_scan(lengths=None, cells=('mingru', 'lru')) -> dict:
  """BPTT train step of each linear cell, parallel scan against sequential lax.scan, at each T: {(cell, T): (seq s,
  scan s)}."""
  out = {}
  print(f'BPTT train step of the linear cells, sequential lax.scan vs parallel scan (B={FLAGS.batch}, '
        f'd={FLAGS.d_model}, K={FLAGS.num_mem_tokens}, memory Z={FLAGS.num_mem_tokens * FLAGS.d_model}):')
  for cell in cells:
    for T in map(int, lengths or FLAGS.scan_lengths):
      times = []
      for scan in (False, True):
        c = _config('bptt', T)
        c.model.cell, c.bptt.parallel_scan = cell, scan
        trainer = Trainer.create(c, jax.devices()[:1])
        holder = [trainer.init_state(jax.random.PRNGKey(0))]
        batch = shard_lib.global_batch(next(BatchIterator(make_source(c.data, 0), 'train', c.batch_size, prefetch=0)),
                                       trainer.batch_sharding)

        def run(trainer=trainer, batch=batch, holder=holder):
          holder[0], m = trainer.train_step(holder[0], batch, jax.random.PRNGKey(0))
          return m
        times.append(_median_time(run, FLAGS.repeats))
      out[(cell, T)] = tuple(times)
      print(f'  {cell:>6} T={T:5d}: sequential {1e3 * times[0]:9.1f} ms | parallel scan {1e3 * times[1]:9.1f} ms | '
            f'sequential / scan = {times[0] / times[1]:.2f}', flush=True)
  return out


def _paper_sizes():
  """The published model and DMT sizes (method.md §8)."""
  for name, value in dict(d_model=256, num_mem_tokens=16, depth=8, dec_depth=4, batch=32, dmt_context=256,
                          dmt_rollout=256, dmt_every=16, future=64, lengths=['1024'], dtype='bfloat16', remat=True,
                          prefix_chunk=64).items():
    setattr(FLAGS, name, value)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  if FLAGS.paper:
    _paper_sizes()
  print(f'device: {jax.devices()[0].device_kind} ({jax.devices()[0].platform})')
  if FLAGS.scan:
    bench_parallel_scan()
    return
  bench_dmt()
  bench_bptt_vs_smt()


if __name__ == '__main__':
  app.run(main)
