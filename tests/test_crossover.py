"""Honest comparisons at a tiny size: tuned methods against sequence length at equal wall clock (the crossover),
experiments.compare's tuned mode, and the teacher's-ceiling sweep."""

import json
import subprocess
import sys

import pytest

from smtjax.studies import ceiling, crossover, wallclock
from tests.conftest import ROOT, tiny_config


def test_crossover_length():
  """A win is a per-seed accuracy difference whose 95% interval lies above zero: noise at chance is none."""
  def run(smt, dmt, bptt):
    return {'results': {k: {'accuracy': {'mean': sum(v) / len(v), 'per_seed': v}}
                        for k, v in (('smt', smt), ('smt_dmt', dmt), ('bptt', bptt))}}
  hi, lo = [0.9, 0.92, 0.88], [0.2, 0.25, 0.15]
  runs = {'8': run(lo, lo, hi), '16': run(hi, lo, lo), '32': run(lo, hi, [0.5, 0.6, 0.55]), '64': run(hi, lo, lo)}
  assert crossover.crossover_length(runs, [8, 16, 32, 64]) == 16
  runs['64'] = run([0.121, 0.145, 0.098], [0.117, 0.105, 0.141], [0.113, 0.105, 0.137])  # all at chance
  assert crossover.crossover_length(runs, [8, 16, 32, 64]) is None
  assert crossover.beats(run([0.5], lo[:1], [0.4]), 'smt')  # one seed: the higher accuracy


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


def test_calibration_times_a_learning_rate_grid_once(tmp_path, monkeypatch):
  """Candidates that differ only in learning rate (or seed) compile to the same step: one timing run serves
  them; a different cell is timed on its own."""
  c = tiny_config()
  configs = {}
  for name, lr, cell in (('t_lr1', 1e-3, 'transformer'), ('t_lr3', 3e-3, 'transformer'), ('gru', 1e-3, 'gru')):
    configs[name] = c.copy_and_resolve_references()
    configs[name].optim.lr, configs[name].model.cell = lr, cell
  trained = []

  def fake_run_jobs(jobs, lanes):
    for i, job in enumerate(jobs):
      trained.append(job.workdir.name)
      job.workdir.mkdir(parents=True)
      rate = 10.0 * (i + 1)
      (job.workdir / 'metrics.jsonl').write_text(
          ''.join(json.dumps({'step': s, 'steps_per_s': rate}) + '\n' for s in range(1, job.config.num_steps + 1)))

  monkeypatch.setattr(wallclock, 'run_jobs', fake_run_jobs)
  cal = wallclock.calibrate(configs, tmp_path)
  assert trained == ['t_lr1', 'gru']
  assert cal == {'t_lr1': 0.1, 't_lr3': 0.1, 'gru': 0.05}
  assert json.loads((tmp_path / 'calibration.json').read_text()) == cal
  assert wallclock.calibrate({'t_lr3': configs['t_lr3']}, tmp_path) == cal and trained == ['t_lr1', 'gru']
