r"""How many memories per sequence parallel SMT should decode, and how many transitions it should train: the
gradient's noise and the step time against smt.num_decoder_samples or smt.num_transitions.

  python -m experiments.bench_sampling --config=configs/retrieval.py:small [--field=num_decoder_samples] \
      [--samples=1,2,4,8,16,0] [--pretrain_steps=300] [--batches=8] [--draws=8]
  python -m experiments.bench_sampling --config=configs/tinystories.py:cpu --field=num_transitions \
      --samples=8,16,32,64,0

Trains the config's teacher for --pretrain_steps steps (with the config's own sampling), then,
for each count S of the --field (0 = all), computes the gradient of that loss term alone (the decoder loss, or
the dynamics loss) on --batches training batches x --draws sampling draws, and times the train step. Prints,
per S: the gradient variance (mean squared distance from the mean gradient, over batches and draws) relative
to taking all, the step time, and the efficiency (all's variance x step time over S's: above 1, S reaches a
given gradient noise in less time than taking all). The sampled losses are unbiased whatever S
(tests/test_losses.py), so S trades noise for time only.
"""

import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from experiments import _cli, bench  # noqa: F401 -- bench defines --config, --steps and --repeats
from smtjax import config as config_lib
from smtjax import smt, train
from smtjax.benchmarks import time_train_step
from smtjax.data import make_source
from smtjax.data.pipeline import BatchIterator
from smtjax.models import Networks

FLAGS = flags.FLAGS
flags.DEFINE_enum('field', 'num_decoder_samples', ['num_decoder_samples', 'num_transitions'],
                  'The config.smt count to vary.')
flags.DEFINE_list('samples', ['1', '2', '4', '8', '16', '0'], 'Values of --field per sequence (0 = all).')
flags.DEFINE_integer('pretrain_steps', 300, 'Teacher training steps before the gradients are measured.')
flags.DEFINE_integer('batches', 8, 'Training batches per measurement.')
flags.DEFINE_integer('draws', 8, 'Sampling draws per batch.')


TERMS = {'num_decoder_samples': ('coef_dyn', 'coef_unif'), 'num_transitions': ('coef_dec', 'coef_unif')}


def gradient_variance(config, params, batches, draws: int, field: str) -> float:
  """Mean squared distance of the gradient of `field`'s loss term alone from its mean, over batches x draws."""
  c = config.copy_and_resolve_references()
  for coef in TERMS[field]:
    c.smt[coef] = 0.0
  nets = Networks.from_config(c)

  @jax.jit
  def grads(batch, keys):
    loss = lambda p, r: smt.parallel_losses(nets, p, batch, r, c)[0]
    g = jax.vmap(jax.grad(loss), in_axes=(None, 0))(params, keys)
    return jnp.concatenate([v.reshape(keys.shape[0], -1) for v in jax.tree.leaves(g)], axis=1)

  keys = jax.random.split(jax.random.PRNGKey(1), len(batches) * draws).reshape(len(batches), draws, -1)
  flat = np.concatenate([np.asarray(grads(b, k), np.float64) for b, k in zip(batches, keys)])
  return float(np.mean(np.sum((flat - flat.mean(0)) ** 2, axis=1)))


def study(config, field: str, samples, pretrain_steps: int, num_batches: int, draws: int, steps: int,
          repeats: int) -> list:
  """Rows {S, variance_ratio, step_ms, efficiency}, printed as they come."""
  c = config.copy_and_resolve_references()
  c.num_steps, c.progress_bar = pretrain_steps, False
  c.eval_every = c.checkpoint_every = pretrain_steps
  with tempfile.TemporaryDirectory() as work:
    train.train_and_evaluate(c, work)
    _, params = train.load_params(work)
  source = make_source(c.data, c.seed)
  it = BatchIterator(source, 'train', c.batch_size, 0, 1, prefetch=0)
  batches = [jax.tree.map(jnp.asarray, next(it)) for _ in range(num_batches)]
  it.close()
  every = c.data.seq_len + (1 if field == 'num_decoder_samples' else 1 - c.smt.rollout_steps)
  print(f'{field} of {every} per sequence (T={c.data.seq_len}); teacher trained {pretrain_steps} steps', flush=True)
  print(f'{"S":>4} | {"grad variance / all":>19} | {"step ms":>8} | efficiency', flush=True)
  rows, base = [], None
  counts = sorted({v if 0 < v < every else 0 for v in samples}, key=lambda v: v or every, reverse=True)
  for S in counts:  # all (0) first: the reference
    c.smt[field] = S
    var = gradient_variance(c, params, batches, draws if S else 1, field)
    ms = time_train_step(c, steps, repeats)['step_ms']
    base = base or (var, ms)
    row = dict(S=S, variance_ratio=var / base[0], step_ms=ms, efficiency=base[0] * base[1] / (var * ms))
    rows.append(row)
    print(f'{S or "all":>4} | {row["variance_ratio"]:19.2f} | {ms:8.1f} | {row["efficiency"]:.2f}',
          flush=True)
  return rows


def main(argv):
  _cli.start(argv)
  if FLAGS.config is None:
    raise app.UsageError('give --config')
  with _cli.user_errors():
    config_lib.validate(FLAGS.config)
  study(FLAGS.config, FLAGS.field, [int(s) for s in FLAGS.samples], FLAGS.pretrain_steps, FLAGS.batches,
        FLAGS.draws, FLAGS.steps, FLAGS.repeats)


if __name__ == '__main__':
  app.run(main)
