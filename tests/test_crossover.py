"""Honest comparisons at a tiny size: tuned methods against sequence length at equal wall clock (the crossover),
experiments.compare's tuned mode, and the teacher's-ceiling sweep."""

import json
import subprocess
import sys

import pytest

from smtjax.errors import ConfigError
from smtjax.studies import ceiling, crossover, runner, wallclock
from tests.conftest import ROOT, seed_calibration, tiny_config


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
  """Tuned once at T=6, every method keeps its choice at the length it runs at (T=8). Step times come from a
  written calibration (1/16 s per step: 8 steps in the 0.5 s budget), and candidate 'a' is the base config
  (SMT's and SMT->DMT's SMT stage share its program): few processes, few distinct programs to compile."""
  c = tiny_config()
  c.num_eval_batches = 1
  plan = crossover.Plan(budget_s=0.5, seeds=(0,), evals_per_run=2, num_eval_batches=1, test_multiples=(),
                        select_by='accuracy')
  smt_grid = (('a', ()), ('b', (('smt.rollout_steps', 2),)))
  small = (wallclock.Method('smt', 'SMT', 'smt', grid=smt_grid),
           wallclock.Method('smt_dmt', 'SMT→DMT', 'smt_dmt', grid=(('a', ()),)),
           wallclock.Method('bptt', 'BPTT', 'bptt', grid=(('gru', (('model.cell', 'gru'),)),
                                                           ('transformer', (('model.cell', 'transformer'),)))))
  for d in ('tune_T6', 'T8'):
    seed_calibration(tmp_path / 'retrieval' / d, small, plan)
  result = crossover.run_crossover({'retrieval': c}, [8], plan, tmp_path, tune_at=6, study_methods=small)
  r = result['retrieval']
  assert r['tune_at'] == 6 and set(r['selection']) == {'smt', 'smt_dmt', 'bptt'}
  assert r['selection']['bptt']['chosen'] in ('gru', 'transformer')
  assert set(r['selection']['smt']['scores']) == {'a', 'b'}
  assert set(r['runs']['8']['results']) == {'teacher', 'smt', 'smt_dmt', 'bptt'}
  steps = {m: v['steps'] for m, v in r['runs']['8']['runs'].items()}
  assert steps == {'smt': 8, 'smt_dmt': '6 SMT + 2 DMT', 'bptt': 8}  # the budget at the calibrated step time
  config = json.loads((tmp_path / 'retrieval' / 'T8' / 'seed0' / 'bptt' / 'config.json').read_text())
  assert config['model']['cell'] == r['selection']['bptt']['chosen']  # the choice made at T=6
  verdict = 'T = 8' if r['crossover'] else 'none up to T = 8'
  assert f'Crossover: {verdict}' in (tmp_path / 'crossover.md').read_text()
  assert (tmp_path / 'crossover_retrieval.png').stat().st_size > 1000
  assert json.loads((tmp_path / 'crossover.json').read_text())['retrieval']['lengths'] == [8]


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
  RunKey = runner.RunKey
  t_lr1, t_lr3, gru = RunKey('t', candidate='lr1'), RunKey('t', 'start', 'lr3'), RunKey('gru')
  for key, lr, cell in ((t_lr1, 1e-3, 'transformer'), (t_lr3, 3e-3, 'transformer'), (gru, 1e-3, 'gru')):
    configs[key] = c.copy_and_resolve_references()
    configs[key].optim.lr, configs[key].model.cell = lr, cell
  trained = []

  def fake_run_jobs(jobs, lanes):
    for i, job in enumerate(jobs):
      trained.append(job.workdir.name)
      job.workdir.mkdir(parents=True)
      rate = 10.0 * (i + 1)
      (job.workdir / 'metrics.jsonl').write_text(
          ''.join(json.dumps({'step': s, 'steps_per_s': rate}) + '\n' for s in range(1, job.config.num_steps + 1)))

  monkeypatch.setattr(runner, 'run_jobs', fake_run_jobs)
  cal = wallclock.calibrate(configs, tmp_path)
  assert trained == ['t|lr1', 'gru']  # each timing run's workdir is named by its key's str
  assert cal == {t_lr1: 0.1, t_lr3: 0.1, gru: 0.05}
  assert json.loads((tmp_path / 'calibration.json').read_text()) == {'t|lr1': 0.1, 't:start|lr3': 0.1, 'gru': 0.05}
  assert wallclock.calibrate({t_lr3: configs[t_lr3]}, tmp_path) == cal and trained == ['t|lr1', 'gru']


def test_a_plans_learning_rates_tune_every_method_alike():
  plan = wallclock.Plan(budget_s=1.0, seeds=(0,), drift_grid=(('roll2', (('smt.rollout_steps', 2),)),),
                        lrs=(3e-4, 1e-3))
  plain = wallclock.Method('bptt', 'BPTT', 'bptt')
  drift = wallclock.Method('smt_drift', 'SMT, drift', 'smt', drift=True)
  cells = wallclock.Method('bptt_cells', 'BPTT', 'bptt', grid=(('gru', (('model.cell', 'gru'),)),))
  assert dict(wallclock.candidates(plain, plan)) == {'lr0.0003': (('optim.lr', 3e-4),),
                                                     'lr0.001': (('optim.lr', 1e-3),)}
  assert set(dict(wallclock.candidates(drift, plan))) == {'roll2_lr0.0003', 'roll2_lr0.001'}
  assert dict(wallclock.candidates(cells, plan))['gru_lr0.001'] == (('model.cell', 'gru'), ('optim.lr', 1e-3))
  own_lr = wallclock.Method('smt', 'SMT', 'smt', grid=(('a', (('optim.lr', 1e-2),)),))
  assert wallclock.candidates(own_lr, plan) == own_lr.grid  # a grid that sets the learning rate keeps it
  assert wallclock.candidates(plain, wallclock.Plan(budget_s=1.0, seeds=(0,))) == ()
  with pytest.raises(ConfigError, match='lanes'):
    wallclock.check(tiny_config(), (plain,), wallclock.Plan(budget_s=1.0, seeds=(0,), lanes=-1))


def test_trained_seconds_add_each_logged_interval(tmp_path):
  records = [{'step': 10, 'steps_per_s': 1.0}, {'step': 20, 'steps_per_s': 5.0}, {'step': 25, 'eval': 1},
             {'step': 40, 'steps_per_s': 10.0}]
  (tmp_path / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in records))
  # the first 10 steps (compiling) at the median of the later rates (7.5/s), then 10 at 5/s and 20 at 10/s
  assert wallclock.trained_seconds(tmp_path) == pytest.approx(10 / 7.5 + 2 + 2)
