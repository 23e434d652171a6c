"""The claims study (smtjax/studies/claims.py): equal steps and batch, one grid for every method, the plateau
and teacher checks, the table."""

import json

import numpy as np
import pytest

from smtjax.errors import ConfigError
from smtjax.studies import claims
from tests.conftest import tiny_config


def test_last_quarter_change_is_the_trend_over_the_last_quarter():
  steps = list(range(0, 1001, 100))
  flat = {'steps': steps, 'values': [0.5] * 6 + [0.9] * 5}  # rose early, flat over the last quarter
  assert claims.last_quarter_change(flat) == pytest.approx(0.0, abs=1e-9)
  rising = {'steps': steps, 'values': [s / 1000 for s in steps]}  # +1 over 1000 steps: +0.25 per quarter
  assert claims.last_quarter_change(rising) == pytest.approx(0.25)
  noisy = {'steps': steps, 'values': [0.9 + 0.02 * (-1) ** i for i in range(11)]}  # noise, no trend
  assert abs(claims.last_quarter_change(noisy)) < 0.02
  assert np.isnan(claims.last_quarter_change({'steps': [10], 'values': [0.3]}))


def test_configs_give_equal_batches_and_bptt_the_steps_of_smt_and_dmt_together():
  c = tiny_config()
  s = claims.Setting(3e-4, 'gru', 'roll4')
  cs = claims.configs(c, 8, s, seed=1, smt_steps=40, dmt_steps=8, evals=4, num_eval_batches=2, smt_dir='/smt')
  assert {k: v.batch_size for k, v in cs.items()} == dict.fromkeys(claims.METHODS, c.batch_size)
  assert cs['bptt'].num_steps == cs['smt'].num_steps + cs['smt_dmt'].num_steps == 48
  assert cs['smt_bptt'].num_steps == 8 and cs['smt_bptt'].init_from == '/smt' == cs['smt_dmt'].init_from
  assert cs['smt'].smt.rollout_steps == 4 and cs['smt_dmt'].smt.rollout_steps == 1  # drift: SMT's own choice
  assert all(v.model.cell == 'gru' and v.eval_split == 'valid' and v.seed == 1 for v in cs.values())
  assert cs['smt_bptt'].model.initial_memory == 'encoder' and cs['smt_bptt'].optim.lr == cs['smt_dmt'].optim.lr
  assert claims.sequential_depth(cs['bptt']) == 8 and claims.sequential_depth(cs['smt']) == 4
  with pytest.raises(ConfigError, match='grid'):
    claims.run_claims(c, [8], claims.Plan(smt_steps=4, dmt_steps=2, drifts=('sideways',)), '/tmp/unused')


@pytest.mark.slow
def test_claims_study_runs_end_to_end(tmp_path):
  c = tiny_config()
  plan = claims.Plan(smt_steps=8, dmt_steps=4, seeds=(0, 1), tune_steps=0, evals=4, num_eval_batches=1)
  out = claims.run_claims(c, [6], plan, tmp_path)['6']
  for ext in ('json', 'md', 'png'):
    assert (tmp_path / f'claims_retrieval_T6.{ext}').stat().st_size > 0
  saved = json.loads((tmp_path / 'claims_retrieval_T6.json').read_text())
  for row in ('same_cell', 'best'):
    cells = saved['rows'][row]
    assert set(cells) == set(claims.METHODS)
    for m, cell in cells.items():
      assert len(cell['per_seed']) == 2 and 0 <= cell['accuracy'] <= 1 and cell['accuracy_ci'] is not None
      assert cell['curve']['steps'] and cell['steps'] == (12 if m != 'smt' else 8)
      assert isinstance(cell['converged'], bool) and cell['seconds_per_update'] > 0
    assert 'teacher_converged' in cells['smt_dmt'] and 'teacher_converged' not in cells['bptt']
  text = (tmp_path / 'claims_retrieval_T6.md').read_text()
  assert 'SMT→BPTT' in text and ('plateau' in text or 'not converged' in text)
  assert out['rows']['same_cell']['bptt']['sequential_depth'] == 6


@pytest.mark.slow
def test_tune_only_scores_every_candidate_of_every_method_with_equal_tuning_steps_and_trains_no_seed(tmp_path):
  c = tiny_config()
  plan = claims.Plan(smt_steps=8, dmt_steps=4, seeds=(0,), tune_steps=4, lrs=(1e-3,), cells=('transformer', 'gru'),
                     drifts=('plain', 'roll4'), evals=4, num_eval_batches=1, lanes=0, tune_only=True)
  out = claims.run_claims(c, [6], plan, tmp_path)['6']
  assert 'rows' not in out and not list((tmp_path / 'retrieval' / 'T6').glob('seed*'))
  plain = {'transformer_lr0.001', 'gru_lr0.001'}
  saved = json.loads((tmp_path / 'claims_retrieval_T6_tuning.json').read_text())
  for m, t in saved['tuning'].items():
    names = plain | ({'transformer_lr0.001_roll4', 'gru_lr0.001_roll4'} if m == 'smt' else set())
    assert set(t['scores']) == set(t['curves']) == names and t['best'] in names
    assert t['same_cell'].startswith('transformer')
    assert all(0 <= v <= 1 for v in t['scores'].values())
    own_steps = {'smt': 4, 'bptt': 8}.get(m, 1)  # BPTT: SMT's steps over its fewer candidates; fine-tuning: a fifth
    assert all(cur['rnn']['steps'][-1] == own_steps for cur in t['curves'].values())
    assert set(t['teacher']) == (names if m == 'smt' else set())
  assert saved['tuning']['smt']['steps'] == saved['tuning']['bptt']['steps'] == 16  # equal tuning steps in all
  text = (tmp_path / 'claims_retrieval_T6_tuning.md').read_text()
  assert 'gru_lr0.001_roll4' in text and 'SMT→BPTT' in text and 'teacher change' in text
  assert (tmp_path / 'claims_retrieval_T6_tuning.png').stat().st_size > 0
