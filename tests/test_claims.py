"""The claims study (smtjax/studies/claims.py): equal steps and batch, one grid for every method, the plateau
and teacher checks, the table."""

import dataclasses
import json

import numpy as np
import pytest

from smtjax import config as config_lib
from smtjax.errors import ConfigError
from smtjax.studies import claims, ledger
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
  # One horizon for every run: the same slope over a run four times shorter is the same change.
  short = {'steps': [s // 4 for s in steps], 'values': [s / 1000 for s in steps]}  # +1 over 250 steps
  assert claims.last_quarter_change(short, horizon=250) == pytest.approx(1.0)
  assert claims.last_quarter_change(short) == pytest.approx(0.25)  # its own quarter hides that
  assert claims.horizon(6000, 1200) == 1800 and claims.tuning_horizon(1000) == 300


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
  # Every stage of every method under one schedule (DMT's own default is a cosine decay to zero).
  assert {(v.optim.schedule, v.optim.warmup_frac) for v in cs.values()} == {(c.optim.schedule, c.optim.warmup_frac)}
  assert claims.sequential_depth(cs['bptt']) == 8 and claims.sequential_depth(cs['smt']) == 4
  c.curriculum.length, c.curriculum.steps = 4, 10  # SMT and BPTT train the same short stage first
  cs = claims.configs(c, 8, s, seed=1, smt_steps=40, dmt_steps=8, evals=4, num_eval_batches=2, smt_dir='/smt')
  assert {k: (v.curriculum.length, v.curriculum.steps) for k, v in cs.items()} == {
      'smt': (4, 10), 'bptt': (4, 10), 'smt_dmt': (0, 0), 'smt_bptt': (0, 0)}
  for v in cs.values():
    config_lib.validate(v)
  with pytest.raises(ConfigError, match='grid'):
    claims.run_claims(c, [8], claims.Plan(smt_steps=4, dmt_steps=2, drifts=('sideways',)), '/tmp/unused')


def test_plans_that_cannot_finish_or_would_bias_are_refused_before_training(tmp_path):
  c = tiny_config()
  plan = claims.Plan(smt_steps=4, dmt_steps=2, tune_steps=4, drifts=('roll4',))  # nothing trains the plain run
  with pytest.raises(ConfigError, match="without 'plain'"):
    claims.run_claims(c, [8], plan, tmp_path)
  with pytest.raises(ConfigError, match='bad plan: evals must be >= 4.*got 2'):
    claims.run_claims(c, [8], claims.Plan(smt_steps=4, dmt_steps=2, evals=2), tmp_path)
  c.optim.schedule = 'cosine'
  with pytest.raises(ConfigError, match='optim.schedule'):
    claims.run_claims(c, [8], claims.Plan(smt_steps=4, dmt_steps=2), tmp_path)
  assert not list(tmp_path.iterdir())  # nothing trained


def _fake_run(workdir, steps, values, key='rnn_only_accuracy', steps_per_s=10.0, **extra):
  workdir.mkdir(parents=True)
  lines = [json.dumps({'step': s, 'steps_per_s': steps_per_s}) for s in (1, *steps)]
  lines += [json.dumps({'step': s, key: v, 'rnn_only_loss': 1.0, **{k: f(s) for k, f in extra.items()}})
            for s, v in zip(steps, values)]
  (workdir / 'metrics.jsonl').write_text('\n'.join(lines) + '\n')


def test_cells_judge_every_run_over_one_horizon_gate_on_the_teacher_and_count_both_stages(tmp_path):
  """A cell from hand-made learning curves: the fine-tuning stage (200 steps) still rises by 0.008 over its
  own last quarter, 0.048 over the plan's horizon (300 steps): not converged. Its SMT stage's teacher is still
  rising: 'teacher not converged'. Seconds per update: both stages' updates (1000 at 0.1 s, 200 at 0.5 s)."""
  scores = {'rnn_only_accuracy': 0.5, 'rnn_only_bits': 1.0, 'teacher_accuracy': 0.9}
  c = tiny_config()
  plan = claims.Plan(smt_steps=1000, dmt_steps=200, seeds=(0,), evals=8)
  smt_steps, dmt_steps = list(range(125, 1001, 125)), list(range(25, 201, 25))
  _fake_run(tmp_path / 'smt', smt_steps, [0.4] * 8, steps_per_s=10.0,
            teacher_accuracy=lambda s: 0.5 + s / 2000)  # the teacher rises by 0.125 per 250 steps
  _fake_run(tmp_path / 'dmt', dmt_steps, [0.6 + s * 0.00016 for s in dmt_steps], steps_per_s=2.0)
  smt_job = claims.Job(tmp_path / 'smt', claims._steps(c.copy_and_resolve_references(), 1000, 8))
  dmt_job = claims.Job(tmp_path / 'dmt', claims._steps(c.copy_and_resolve_references(), 200, 8))
  records = {str(j.workdir): ledger.make_record(j.workdir.name, j.workdir, j.config, scores)
             for j in (smt_job, dmt_job)}
  cell = claims._result(plan, 'smt_dmt', claims.Setting(1e-3, 'transformer'), [(dmt_job, smt_job)], records)
  assert claims.last_quarter_change(claims.curve(records[str(dmt_job.workdir)])) == pytest.approx(0.008)
  assert cell['change'] == pytest.approx(0.048) and not cell['converged']
  assert cell['teacher_change'] == pytest.approx(0.15) and cell['teacher_converged'] is False
  assert claims._verdict(cell) == 'teacher not converged'
  assert cell['seconds_per_update'] == pytest.approx((1000 * 0.1 + 200 * 0.5) / 1200)
  assert cell['steps'] == 1200 and cell['curve']['steps'][0] == 125 and cell['curve']['steps'][-1] == 1200


def test_verdict_reads_the_teacher_gate_first_then_the_plateau():
  assert claims._verdict({'converged': True}) == 'plateau'
  assert claims._verdict({'converged': False}) == 'not converged'
  assert claims._verdict({'converged': True, 'teacher_converged': True}) == 'plateau'
  assert claims._verdict({'converged': True, 'teacher_converged': False}) == 'teacher not converged'
  assert claims._verdict({'converged': False, 'teacher_converged': False}) == 'teacher not converged'


@pytest.mark.slow
def test_claims_study_runs_end_to_end(tmp_path):
  c = tiny_config()
  plan = claims.Plan(smt_steps=8, dmt_steps=4, seeds=(0, 1), tune_steps=0, evals=4, num_eval_batches=1)
  book = tmp_path / 'runs' / 'claims.jsonl'
  out = claims.run_claims(c, [6], plan, tmp_path, ledger=str(book))['6']
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
  for row, cells in saved['rows'].items():  # each table line ends with its cell's own verdict
    for m, cell in cells.items():
      line, = [x for x in text.splitlines() if x.startswith(f'| {row.replace("_", " ")} | {claims.METHODS[m]} |')]
      assert line.endswith(f'| {claims._verdict(cell)} |')
  assert out['rows']['same_cell']['bptt']['sequential_depth'] == 6
  # The ledger holds every run (SMT twice over seeds, the three others once per seed: 8 records), named by its
  # path under the study's folder; a report from it alone, elsewhere, trains nothing and rebuilds the table.
  names = [json.loads(line)['name'] for line in book.read_text().splitlines()]
  assert len(names) == len(set(names)) == 8 and all(n.startswith('retrieval/T6/seed') for n in names)
  report = tmp_path / 'report'
  again = claims.run_claims(c, [6], dataclasses.replace(plan, report=True), report, ledger=str(book))['6']
  assert not (report / 'retrieval').exists()  # no run trained
  assert (report / 'claims_retrieval_T6.md').read_text() == text
  assert again['rows']['best']['smt_dmt']['accuracy'] == out['rows']['best']['smt_dmt']['accuracy']
  # A ledger that lacks a run: its cells say so, the others are reported.
  kept = [line for line in book.read_text().splitlines() if '/smt_dmt_' not in json.loads(line)['name']]
  partial = tmp_path / 'partial.jsonl'
  partial.write_text('\n'.join(kept) + '\n')
  part = claims.run_claims(c, [6], dataclasses.replace(plan, report=True), tmp_path / 'p', ledger=str(partial))['6']
  assert claims._verdict(part['rows']['same_cell']['smt_dmt']) == 'not run (2 of 4 runs missing)'
  assert part['rows']['same_cell']['bptt']['accuracy'] == out['rows']['same_cell']['bptt']['accuracy']


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
    own_steps = {'smt': 4, 'bptt': 5}.get(m, 1)  # BPTT: an SMT candidate's and its fine-tuning's; fine-tuning: a fifth
    assert all(cur['rnn']['steps'][-1] == own_steps for cur in t['curves'].values())
    assert set(t['teacher']) == (names if m == 'smt' else set())
  # BPTT and the fine-tuning methods: equal tuning steps in all (SMT: its own candidates, twice as many here)
  assert saved['tuning']['bptt']['steps'] == saved['tuning']['smt_dmt']['steps'] == saved['tuning']['smt_bptt']['steps']
  assert saved['tuning']['bptt']['steps'] == 2 * 5 and saved['tuning']['smt']['steps'] == 4 * 4
  text = (tmp_path / 'claims_retrieval_T6_tuning.md').read_text()
  assert 'gru_lr0.001_roll4' in text and 'SMT→BPTT' in text and 'teacher change' in text
  assert (tmp_path / 'claims_retrieval_T6_tuning.png').stat().st_size > 0
