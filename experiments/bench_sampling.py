r"""How many memories per sequence parallel SMT should decode: the decoder gradient's noise and the step time
against smt.num_decoder_samples.

  python -m experiments.bench_sampling --config=configs/retrieval.py:small [--samples=1,2,4,8,16,0] \
      [--pretrain_steps=300] [--batches=8] [--draws=8]

Trains the config's teacher for --pretrain_steps steps (decoding every memory), then, for each number S of
decoded memories per sequence (0 = all), computes the gradient of the decoder loss alone on --batches
training batches x --draws sampling draws, and times the train step. Prints, per S: the gradient variance
(mean squared distance from the mean gradient, over batches and draws) relative to decoding every memory,
the step time, and the efficiency (decode-all's variance x step time over S's: above 1, S reaches a given
gradient noise in less time than decoding all). The sampled loss is unbiased whatever S (tests/test_losses.py),
so S trades noise for time only.
"""

import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from experiments import _cli
from experiments.bench import time_train_step  # also defines --config, --steps and --repeats
from smtjax import config as config_lib
from smtjax import smt, train
from smtjax.data import make_source
from smtjax.data.pipeline import BatchIterator
from smtjax.models import Networks

FLAGS = flags.FLAGS
flags.DEFINE_list('samples', ['1', '2', '4', '8', '16', '0'], 'Decoded memories per sequence (0 = all).')
flags.DEFINE_integer('pretrain_steps', 300, 'Teacher training steps before the gradients are measured.')
flags.DEFINE_integer('batches', 8, 'Training batches per measurement.')
flags.DEFINE_integer('draws', 8, 'Sampling draws per batch.')


def decoder_gradient_variance(config, params, batches, draws: int) -> float:
  """Mean squared distance of the decoder loss's gradient from its mean, over batches x draws."""
  c = config.copy_and_resolve_references()
  c.smt.coef_dyn, c.smt.coef_unif = 0.0, 0.0
  nets = Networks.from_config(c)

  @jax.jit
  def grads(batch, keys):
    loss = lambda p, r: smt.parallel_losses(nets, p, batch, r, c)[0]
    g = jax.vmap(jax.grad(loss), in_axes=(None, 0))(params, keys)
    return jnp.concatenate([v.reshape(keys.shape[0], -1) for v in jax.tree.leaves(g)], axis=1)

  keys = jax.random.split(jax.random.PRNGKey(1), len(batches) * draws).reshape(len(batches), draws, -1)
  flat = np.concatenate([np.asarray(grads(b, k), np.float64) for b, k in zip(batches, keys)])
  return float(np.mean(np.sum((flat - flat.mean(0)) ** 2, axis=1)))


def study(config, samples, pretrain_steps: int, num_batches: int, draws: int, steps: int, repeats: int) -> list:
  """Rows {S, decoded_tokens, variance_ratio, step_ms, efficiency}, printed as they come."""
  c = config.copy_and_resolve_references()
  c.num_steps, c.smt.num_decoder_samples, c.progress_bar = pretrain_steps, 0, False
  c.eval_every = c.checkpoint_every = pretrain_steps
  with tempfile.TemporaryDirectory() as work:
    train.train_and_evaluate(c, work)
    _, params = train.load_params(work)
  source = make_source(c.data, c.seed)
  it = BatchIterator(source, 'train', c.batch_size, 0, 1, prefetch=0)
  batches = [jax.tree.map(jnp.asarray, next(it)) for _ in range(num_batches)]
  it.close()
  T = c.data.seq_len
  print(f'{"S":>4} | {"decoder tokens/seq":>18} | {"grad variance / all":>19} | {"step ms":>8} | efficiency',
        flush=True)
  rows, base = [], None
  for S in sorted(samples, key=lambda s: s or T + 1, reverse=True):  # decode-all first: the reference
    c.smt.num_decoder_samples = S
    eff_S = S if 0 < S < T + 1 else T + 1
    var = decoder_gradient_variance(c, params, batches, 1 if eff_S == T + 1 else draws)
    ms = time_train_step(c, steps, repeats)['step_ms']
    base = base or (var, ms)
    row = dict(S=S, decoded_tokens=eff_S * c.smt.future, variance_ratio=var / base[0], step_ms=ms,
               efficiency=base[0] * base[1] / (var * ms))
    rows.append(row)
    print(f'{S or "all":>4} | {row["decoded_tokens"]:18d} | {row["variance_ratio"]:19.2f} | {ms:8.1f} | '
          f'{row["efficiency"]:.2f}', flush=True)
  return rows


def main(argv):
  _cli.start(argv)
  if FLAGS.config is None:
    raise app.UsageError('give --config')
  with _cli.user_errors():
    config_lib.validate(FLAGS.config)
  study(FLAGS.config, [int(s) for s in FLAGS.samples], FLAGS.pretrain_steps, FLAGS.batches, FLAGS.draws,
        FLAGS.steps, FLAGS.repeats)


if __name__ == '__main__':
  app.run(main)
