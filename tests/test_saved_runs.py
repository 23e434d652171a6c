"""Runs saved by an earlier smtjax keep working: their checkpoint restores into the current code with the same
numbers, training resumes from it, and a saved config that lacks newer fields is upgraded once when loaded.

tests/fixtures/saved_run/ is the workdir (config.json and the step-4 checkpoint) of a tiny retrieval run
(tests.conftest.tiny_config with a learned initial memory, 4 steps) as smtjax commit 268aed1 wrote it; the
numbers below are the held-out metrics that run logged at step 4.
"""

import json
import shutil

import jax
import numpy as np
import pytest

from smtjax import config as config_lib
from smtjax import train
from smtjax.data import make_source
from smtjax.evaluation import EvalSpec, Evaluator
from smtjax.models import Networks
from tests.conftest import ROOT

SAVED = ROOT / 'tests' / 'fixtures' / 'saved_run'
LOGGED_AT_STEP_4 = {'loss_test': 2.237755298614502, 'loss_dec_test': 2.2380547523498535,
                    'loss_dyn_test': 0.0007579599041491747, 'rnn_only_loss': 2.2693514823913574,
                    'teacher_loss': 2.286196231842041}


@pytest.fixture
def saved_run(tmp_path):
  wd = tmp_path / 'run'
  shutil.copytree(SAVED, wd)
  return wd


def test_a_saved_checkpoint_restores_with_the_numbers_it_logged(saved_run):
  config, params = train.load_params(str(saved_run))
  assert set(params) == {'encoder', 'decoder', 'cell', 'init_memory'}
  run = config_lib.Run.of(config, jax.device_count())
  metrics = Evaluator(run, Networks.of(run.model), EvalSpec.for_training(run))(
      params, make_source(config.data, config.seed), config.num_eval_batches)
  for k, v in LOGGED_AT_STEP_4.items():
    np.testing.assert_allclose(metrics[k], v, rtol=2e-5, err_msg=k)


def test_training_resumes_from_a_saved_checkpoint(saved_run):
  config = config_lib.load_saved(saved_run)
  config.num_steps = 6
  config.eval_every = config.checkpoint_every = 6
  final = train.train_and_evaluate(config, str(saved_run))
  assert np.isfinite(final['loss'])
  assert sorted(p.name for p in (saved_run / 'checkpoints').iterdir() if p.name.isdigit()) == ['6']


def test_a_config_saved_without_newer_fields_gets_their_defaults(saved_run):
  path = saved_run / 'config.json'
  saved = json.loads(path.read_text())
  for section, field in (('model', 'head_dim'), ('model', 'rotary_fraction'), ('model', 'share_embedding'),
                         ('model', 'prefix_chunk'), ('smt', 'rollout_steps'), ('smt', 'memory_noise_mode'),
                         ('optim', 'clip_mode'), ('data', 'source')):
    del saved[section][field]
  del saved['metrics_flush_secs']
  path.write_text(json.dumps(saved))
  c = config_lib.load_saved(saved_run)
  defaults = config_lib.default_config()
  assert (c.model.head_dim, c.model.rotary_fraction, c.smt.rollout_steps, c.optim.clip_mode, c.data.source) == (
      defaults.model.head_dim, defaults.model.rotary_fraction, defaults.smt.rollout_steps, defaults.optim.clip_mode,
      defaults.data.source)
  assert c.model.initial_memory == 'learned' and c.data.options.num_symbols == 8  # saved values and task options
  _, params = train.load_params(str(saved_run))  # the upgraded config restores the checkpoint
  assert jax.tree.leaves(params)


def test_a_saved_config_with_an_unknown_field_names_it(saved_run):
  path = saved_run / 'config.json'
  saved = json.loads(path.read_text())
  saved['model']['d_modle'] = 3
  path.write_text(json.dumps(saved))
  with pytest.raises(config_lib.ConfigError, match=r'config\.model\.d_modle: no such field; did you mean '
                                                   r'config\.model\.d_model'):
    config_lib.load_saved(saved_run)
