r"""Train a run from a config file; resumes from the latest checkpoint in --workdir.

  python -m experiments.run --config=configs/retrieval.py --workdir=/tmp/run1
  python -m experiments.run --workdir=/tmp/run1       # without --config: the workdir's own config.json
  python -m experiments.run --config=configs/retrieval.py:small --config.model.d_model=64
  python -m experiments.run --config=configs/arrays.py --config.data.path=task.npz   # your own data
  python -m experiments.run --config=configs/mnist.py --workdir=gs://bucket/mnist --multihost
"""

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from experiments import _cli
from smtjax import config as config_lib
from smtjax import sharding, train
from smtjax import workdir as workdir_lib

FLAGS = flags.FLAGS
_cli.define_config('Config file, optionally with a variant: configs/x.py:small.')
flags.DEFINE_string('workdir', None, 'Run directory (a local path or gs://...): checkpoints, config.json, '
                    'metrics.jsonl, TensorBoard events. Default: workdirs/<config file>[_<variant>].')
flags.DEFINE_bool('multihost', False, 'Call jax.distributed.initialize() with auto-detection (TPU pod slices, '
                  'SLURM, Open MPI): run the same command on every host.')
flags.DEFINE_string('coordinator_address', '', 'Multi-process without auto-detection: host:port of process 0.')
flags.DEFINE_integer('num_processes', 0, 'Multi-process without auto-detection: number of processes.')
flags.DEFINE_integer('process_id', -1, 'Multi-process without auto-detection: this process\'s id.')


def _config_and_workdir():
  """(config, workdir): --config (default workdir from its name), or else --workdir's saved config.json."""
  if FLAGS.config is not None:
    config_file, _, variant = config_flags.get_config_filename(FLAGS['config']).partition(':')  # 'x.py:small'
    return FLAGS.config, FLAGS.workdir or workdir_lib.default_workdir(config_file, variant)
  if not FLAGS.workdir:
    raise app.UsageError('give --config (a config file), or --workdir of a run that holds config.json')
  _cli.require_workdir(FLAGS.workdir)
  with _cli.user_errors():
    return config_lib.load_saved(FLAGS.workdir), FLAGS.workdir


def main(argv):
  _cli.start(argv)
  sharding.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                                  auto=FLAGS.multihost)
  config, workdir = _config_and_workdir()
  with _cli.user_errors():
    metrics = train.train_and_evaluate(config, workdir)
  summary = 'final: ' + ', '.join(f'{k}={v:.4f}' for k, v in sorted(metrics.items()))
  if jax.process_index() == 0:
    print(summary)  # printed once per run
  else:
    logging.info(summary)


if __name__ == '__main__':
  _cli.run(main)
