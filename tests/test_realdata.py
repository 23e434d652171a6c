"""The real-data comparison end to end at a tiny size: calibration, the drift-robust choice on the validation
split, every method at equal wall clock on TinyStories text, scores, figures and samples; and the `cpu`
variants train a few steps on the shared data."""

import json
import math

import pytest

from configs import mnist, tinystories
from smtjax import config as config_lib
from smtjax import train
from smtjax.errors import ConfigError
from smtjax.studies import realdata, runner, wallclock
from tests.conftest import seed_calibration


def _tiny(c, shared_data, name):
  c.data.path = str(shared_data / name)
  c.data.seq_len, c.batch_size = 16, 4
  c.model.d_model, c.model.num_heads, c.model.head_dim, c.model.num_mem_tokens = 16, 2, 8, 2
  c.model.enc_depth = c.model.dec_depth = c.model.cell_depth = 1
  c.smt.num_transitions, c.smt.num_decoder_samples, c.smt.future = 4, 2, 4
  c.num_eval_batches = 1
  return c


@pytest.mark.parametrize('module,name', [(tinystories, 'tinystories'), (mnist, 'mnist')])
def test_cpu_variants_train_on_the_shared_data(tmp_path, shared_data, module, name):
  c = module.get_config('cpu')
  config_lib.validate(c)
  assert (c.smt.mode, c.model.encoder_attention, c.data.valid_fraction) == ('parallel', 'causal', 0.1)
  c.data.path = str(shared_data / name)
  c.num_steps, c.eval_every, c.checkpoint_every, c.batch_size, c.progress_bar = 2, 2, 2, 2, False
  final = train.train_and_evaluate(c, str(tmp_path))
  assert math.isfinite(final['loss']) and math.isfinite(final['rnn_only_loss'])


@pytest.mark.slow
def test_comparison_runs_end_to_end(tmp_path, shared_data):
  """SMT->DMT's DMT stage is timed for real, from its trained SMT stage; the other step times are written
  beforehand (1/16 s: 8 steps in the 0.5 s budget)."""
  c = _tiny(tinystories.get_config('cpu'), shared_data, 'tinystories')
  plan = realdata.Plan(budget_s=0.5, seeds=(0,), drift_grid=(('roll2', (('rollout_steps', 2),)),),
                       evals_per_run=2, num_eval_batches=1, lanes=0)  # every run in this process
  seed_calibration(tmp_path, realdata.METHODS, plan, timed=(runner.RunKey('smt_dmt'),))
  summary = realdata.run_study(c, plan, tmp_path, 'tiny')
  for col in realdata.COLUMNS:
    r = summary['results'][col]
    assert math.isfinite(r['bits']['mean']) and math.isfinite(r['bits_x2']['mean']), col
    assert len(r['bits_per_t_x2'][0]) == 32, col  # every position of a 2T sequence
    assert summary['curves'][col][0]['seconds'], col
  assert summary['selection']['smt_drift']['chosen'] == 'roll2'
  cal = json.loads((tmp_path / 'calibration.json').read_text())
  assert set(cal) >= {'bptt', 'bptt_gru', 'smt_drift|roll2', 'smt_dmt:start', 'smt_dmt'} and min(cal.values()) > 0
  assert cal['smt_dmt'] != 1 / 16 and (tmp_path / 'calibration' / 'smt_dmt' / 'metrics.jsonl').exists()  # timed
  # Equal wall clock: each method's steps times its step time is the budget (to one step).
  for m in ('bptt', 'bptt_gru'):
    assert abs(summary['runs'][m]['steps'] * cal[m] - plan.budget_s) <= cal[m] + 1e-9
  assert all(r['budget_ratio'] > 0 for r in summary['runs'].values())  # measured from each run's log
  assert 'measured s / budget' in (tmp_path / 'realdata_tiny.md').read_text()
  # SMT alone continues SMT→DMT's SMT stage, at that stage's step time.
  assert abs(summary['runs']['smt']['steps'] * cal['smt_dmt:start'] - plan.budget_s) <= cal['smt_dmt:start'] + 1e-9
  for f in ('realdata_tiny.md', 'realdata_tiny.json', 'curves_tiny.png', 'positions_tiny.png', 'samples_tiny.md'):
    assert (tmp_path / f).stat().st_size > 200, f
  text = (tmp_path / 'samples_tiny.md').read_text()
  assert all(realdata.NAMES[col] in text for col in realdata.COLUMNS)
  # A rerun finds every run finished (timing runs, the selection's, every stage) and trains nothing.
  trained = {p: p.stat().st_mtime for p in tmp_path.rglob('metrics.jsonl')}
  assert len(trained) >= 8 and (tmp_path / 'seed0' / 'bptt' / 'metrics.jsonl') in trained
  wallclock.train_all(c, realdata.METHODS, plan, tmp_path)  # run_study's training, before it scores
  assert {p: p.stat().st_mtime for p in tmp_path.rglob('metrics.jsonl')} == trained


def test_the_study_checks_its_config_before_running(tmp_path):
  c = tinystories.get_config('cpu')
  c.smt.mode = 'window'
  with pytest.raises(ConfigError, match='parallel'):
    realdata.run_study(c, realdata.Plan(budget_s=1.0, seeds=(0,)), tmp_path)
  c = tinystories.get_config('cpu')
  c.data.valid_fraction = 0.0
  with pytest.raises(ConfigError, match='valid_fraction'):
    realdata.run_study(c, realdata.Plan(budget_s=1.0, seeds=(0,)), tmp_path)
