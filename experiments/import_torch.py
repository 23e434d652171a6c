r"""Convert a checkpoint of the public PyTorch SMT code into an smtjax workdir (docs/fidelity.md).

  python -m experiments.import_torch --checkpoint=runs/smt_tinystories_0/checkpoint.pt --workdir=workdirs/public_ts
  python -m experiments.import_torch --checkpoint=state_dicts.npz --workdir=/tmp/public --num_heads=8

The file is a torch checkpoint of train_smt.py / train_dmt.py ({'teacher': ..., 'rnn': ...}; reading it needs
torch) or an .npz of 'teacher.<key>' / 'rnn.<key>' arrays with an optional 'hparams' JSON string. The sizes
come from the weights; the attention heads, memory tokens (of an RNN saved alone) and window lengths from the
file's saved hyperparameters where it has them, else from the flags, else from the published config. The
command prints where each came from. The workdir then works with experiments.evaluate, experiments.sample and
as DMT's config.init_from.
"""

from absl import app, flags

from experiments import _cli
from smtjax.interop import torch as interop

FLAGS = flags.FLAGS
flags.DEFINE_string('checkpoint', None, 'The public code\'s checkpoint: a torch file or an .npz of state dicts.')
flags.DEFINE_string('workdir', None, 'The smtjax workdir to write (config.json and an Orbax checkpoint).')
flags.DEFINE_string('task', 'tinystories', 'The published config the run belongs to (variants.published).')
flags.DEFINE_integer('num_heads', None, 'Attention heads (the public n_heads), if the file does not say.')
flags.DEFINE_integer('num_mem_tokens', None, 'Memory tokens K of an RNN saved without its teacher.')
flags.DEFINE_integer('context', None, 'Tc, if the file does not say (default: the published 256).')
flags.DEFINE_integer('future', None, 'Tf, if the file does not say (default: the published 64).')
flags.DEFINE_integer('rollout', None, 'Td of a DMT run, if the file does not say.')
flags.DEFINE_enum('dtype', 'bfloat16', ['bfloat16', 'float32'], 'Computation dtype of the converted run.')
flags.mark_flags_as_required(['checkpoint', 'workdir'])

_PUBLISHED = {'context': 256, 'future': 64, 'rollout': 0}


def _choose(name: str, hp: dict, sources: dict):
  """The file's value, else the flag's, else the published default (None: the weights decide); notes which."""
  value = interop.hyperparameter(hp, name)
  if value is not None:
    sources[name] = f'{value} (from the file)'
    return int(value)
  flag = FLAGS[name].value
  if flag is not None:
    sources[name] = f'{flag} (--{name})'
    return int(flag)
  default = _PUBLISHED.get(name)
  sources[name] = f'{default} (not in the file: the published default)' if default is not None else \
      'not in the file: read off the weights'
  return default


def main(argv):
  _cli.start(argv)
  try:
    teacher, rnn, hp = interop.load_public(FLAGS.checkpoint)
  except (OSError, ValueError, KeyError) as e:
    text = str(e)  # load_public's own messages start with the path
    raise SystemExit(f'error: {text}' if text.startswith(f'{FLAGS.checkpoint}:') else
                     f'error: {FLAGS.checkpoint}: {text}') from None
  sources = {}
  heads = _choose('num_heads', hp, sources)
  context, future, rollout = (_choose(k, hp, sources) for k in ('context', 'future', 'rollout'))
  try:
    params, model = interop.convert(teacher, rnn, num_heads=heads)
  except ValueError as e:
    raise SystemExit(f'error: {FLAGS.checkpoint}: {e}') from None
  if heads is None:
    sources['num_heads'] = f'{model["num_heads"]} (not in the file: attention width / {interop.DIM_HEAD})'
  if 'num_mem_tokens' not in model:  # an RNN saved alone: its weights do not show K
    k = _choose('num_mem_tokens', hp, sources)
    if k is None:
      raise SystemExit('error: the file holds an RNN without its teacher and no memory size: pass --num_mem_tokens')
    model['num_mem_tokens'] = k
  readout = 'readout' in params
  seq_len = context + (rollout or 0) * readout + future
  config = interop.public_config(model, FLAGS.task, seq_len, context, future, FLAGS.dtype, readout=readout)
  if teacher is None:
    config.method = 'bptt'  # an RNN and its readout, without a teacher
  with _cli.user_errors():
    interop.write_workdir(FLAGS.workdir, params, config)
  print(f'wrote {FLAGS.workdir}: method {config.method}, d_model {model["d_model"]}, K {model["num_mem_tokens"]}, '
        f'depths {model.get("enc_depth", "-")}/{model.get("dec_depth", "-")}/{model["cell_depth"]}, T {seq_len}')
  for name, where in sources.items():
    print(f'  {name}: {where}')


if __name__ == '__main__':
  app.run(main)
