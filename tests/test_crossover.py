"""Honest comparisons at a tiny size: tuned methods against sequence length at equal wall clock (the crossover),
experiments.compare's tuned mode, and the teacher's-ceiling sweep."""

import json
import subprocess
import sys

import pytest

from smtjax.studies import ceiling, crossover, wallclock
from tests.conftest import ROOT, tiny_config


def test_crossover_length():
  run = lambda smt, dmt, bptt: {'results': {'smt': {'accuracy': {'mean': smt}}, 'smt_dmt': {'accuracy': {'mean': dmt}},
                                            'bptt': {'accuracy': {'mean': bptt}}}}
  runs = {'8': run(0.2, 0.3, 0.9), '16': run(0.8, 0.2, 0.5), '32': run(0.1, 0.7, 0.6), '64': run(0.9, 0.1, 0.2)}
  assert crossover.crossover_length(runs, [8, 16, 32, 64]) == 16
  runs['64'] = run(0.1, 0.1, 0.2)
  assert crossover.crossover_length(runs, [8, 16, 32, 64]) is None


def test_every_method_has_its_candidates():
  by_name = {m.name: m for m in crossover.methods()}
  plan = crossover.Plan(budget_s=1.0, seeds=(0,))
  assert len(wallclock.candidates(by_name['smt'], plan)) == 6  # 2 learning rates x 3 drift settings
  assert {dict(s)['model.cell'] for _, s in wallclock.candidates(by_name['bptt'], plan)} == {'transformer', 'gru'}
  fixed = wallclock.fixed(crossover.methods(), {'bptt': (('model.cell', 'gru'), ('optim.lr', 1e-3))})
  assert all(not wallclock.candidates(m, plan) for m in fixed)
  assert dict({m.name: m for m in fixed}['bptt'].overrides)['model.cell'] == 'gru'


@pytest.mark.slow
def test_tuned_crossover_runs_end_to_end(tmp_path):
  c = tiny_config()
  c.num_eval_batches = 1
  plan = crossover.Plan(budget_s=0.6, seeds=(0,), evals_per_run=2, num_eval_batches=1, test_multiples=(),
                        select_by='accuracy')
  smt_grid = (('a', (('optim.lr', 1e-3),)), ('b', (('smt.rollout_steps', 2),)))
  small = (wallclock.Method('smt', 'SMT', 'smt', grid=smt_grid),
           wallclock.Method('smt_dmt', 'SMT→DMT', 'smt_dmt', grid=(('a', (('optim.lr', 1e-3),)),)),
           wallclock.Method('bptt', 'BPTT', 'bptt', grid=(('gru', (('model.cell', 'gru'),)),
                                                           ('transformer', (('model.cell', 'transformer'),)))))
  result = crossover.run_crossover({'retrieval': c}, [6, 8], plan, tmp_path, study_methods=small)
  r = result['retrieval']
  assert r['tune_at'] == 8 and set(r['selection']) == {'smt', 'smt_dmt', 'bptt'}
  assert r['selection']['bptt']['chosen'] in ('gru', 'transformer')
  for L in ('6', '8'):
    assert set(r['runs'][L]['results']) == {'teacher', 'smt', 'smt_dmt', 'bptt'}
  assert 'Crossover' in (tmp_path / 'crossover.md').read_text()
  assert (tmp_path / 'crossover_retrieval.png').stat().st_size > 1000
  assert json.loads((tmp_path / 'crossover.json').read_text())['retrieval']['lengths'] == [6, 8]


@pytest.mark.slow
def test_ceiling_sweep_runs_end_to_end(tmp_path):
  c = tiny_config()
  c.num_steps = 4
  knobs = {'memory tokens K': (('K=1', (('model.num_mem_tokens', 1),)), ('K=2', (('model.num_mem_tokens', 2),)))}
  s = ceiling.run_ceiling(c, tmp_path, seeds=(0,), knobs=knobs, evals=2, num_eval_batches=1, name='tiny')
  rows = s['knobs']['memory tokens K']
  assert [r['value'] for r in rows] == ['K=1', 'K=2'] and all(r['seconds_per_step'] > 0 for r in rows)
  assert all(0 <= r['teacher']['mean'] <= 1 and 0 <= r['rnn']['mean'] <= 1 for r in rows)
  assert [p['step'] for p in s['steps_curve']] == [2, 4]
  assert 'gap' in (tmp_path / 'ceiling_tiny.md').read_text() and (tmp_path / 'ceiling_tiny.png').exists()


def test_compare_budget_mode_checks_its_config_first(tmp_path):
  """experiments.compare --budget_seconds goes through the tuned study, which refuses a window-mode config
  before anything trains."""
  r = subprocess.run([sys.executable, '-m', 'experiments.compare', '--config=configs/retrieval.py:small',
                      '--config.smt.mode=window', '--config.model.encoder_attention=bidirectional',
                      '--config.smt.context=6', '--config.smt.future=4', '--budget_seconds=1', f'--out={tmp_path}'],
                     cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert r.returncode != 0 and 'parallel' in r.stderr and 'Traceback' not in r.stderr, r.stderr[-2000:]
  assert not (tmp_path / 'retrieval').exists()
