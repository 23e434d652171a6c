"""experiments.compare / smtjax.studies.compare: a tiny config end to end (SMT, SMT->DMT, BPTT per length,
seeds with 95% intervals, length generalization), and the statistics it reports.

One length keeps the test to a few compilations; the table and plot code is the same for any number."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from smtjax import plotting, runs, train, variants
from smtjax.errors import ConfigError
from smtjax.studies import compare, runner, stats
from tests.conftest import ROOT, tiny_config


def test_dmt_lengths_fit():
  for T in (3, 6, 8, 12, 32, 512, 4096):
    Tc, Td, k = variants.dmt_lengths(T)
    assert Tc >= 1 and Td >= 1 and Td % k == 0 and Tc + Td <= T


def test_json_safe_is_the_one_sanitizer():
  import numpy as np

  from smtjax import workdir as workdir_lib
  v = {'a': float('nan'), 'b': (1.0, float('inf'), np.float32('nan'), np.float64(0.5)), 'c': {'d': np.int64(3)}}
  assert workdir_lib.json_safe(v) == {'a': None, 'b': [1.0, None, None, 0.5], 'c': {'d': 3}}


def test_mean_ci_is_the_t_interval():
  v = [0.5, 0.7, 0.9]
  st = stats.mean_ci(v)
  # t_{0.975, 2} = 4.303; s = 0.2
  np.testing.assert_allclose(st['mean'], 0.7)
  np.testing.assert_allclose(st['ci'], 4.302653 * 0.2 / math.sqrt(3), rtol=1e-5)
  assert math.isnan(stats.mean_ci([0.4])['ci']) and stats.mean_ci([0.4, None, float('nan')])['n'] == 1
  assert stats.mean_ci([0.4, None, float('inf'), 0.5])['dropped'] == 2 and stats.mean_ci(v)['dropped'] == 0
  assert stats.fmt(0.7, 0.05) == '0.700 ± 0.050' and stats.fmt(None) == 'n/a'


def test_at_length_resizes_and_keeps_the_config():
  c = tiny_config()
  c.smt.rollout_steps, c.smt.num_transitions = 4, 8
  r = compare.at_length(c, 6, steps=3, seed=5)
  assert (r.data.seq_len, r.smt.future, r.smt.rollout_steps, r.smt.num_transitions, r.num_steps, r.seed) == (
      6, 6, 4, 8, 3, 5)  # num_transitions is an at-most count: 8 of the 3 starts of 4 steps means all
  assert c.data.seq_len == 8 and c.seed == 0  # the input is not modified
  c.smt.future = 4  # a short (dense-target) future stays short
  assert compare.at_length(c, 16).smt.future == 4


@pytest.mark.slow
def test_tiny_comparison_with_seeds_and_longer_test_sequences(tmp_path, monkeypatch):
  out = str(tmp_path / 'cmp')
  summary = compare.run_comparison(tiny_config(), [6], out=out, steps=4, dmt_steps=2, seeds=2, test_lengths=[2])
  for ext in ('json', 'md', 'png'):
    assert (tmp_path / 'cmp' / f'compare_retrieval.{ext}').stat().st_size > 0
  data = json.loads((tmp_path / 'cmp' / 'compare_retrieval.json').read_text())
  assert data['lengths'] == [6] and data['seeds'] == [0, 1]
  row = data['results']['6']
  for m in ('teacher', 'smt', 'dmt', 'bptt'):
    per = row[m]['per_seed']
    assert [p['seed'] for p in per] == [0, 1]
    for key in ('loss', 'accuracy'):
      vals = [p[key] for p in per]
      assert all(v is not None and math.isfinite(v) for v in vals), (m, key, vals)
      st = stats.mean_ci(vals)
      assert row[m][key] == pytest.approx(st['mean']) and row[m][f'{key}_ci'] == pytest.approx(st['ci'], nan_ok=True)
    # the per-seed numbers are the runs' own eval.json
    ev = json.loads((tmp_path / 'cmp' / 'retrieval' / 'T6' / 'seed1' / ('smt' if m == 'teacher' else m) /
                     'eval.json').read_text())
    assert per[1]['accuracy'] == ev['teacher_accuracy' if m == 'teacher' else 'rnn_only_accuracy']
    # length generalization: scored on sequences of 12 tokens, from each run's eval_T12.json
    g = row['generalization'][m]['2']['per_seed'][0]
    assert g['seq_len'] == 12
    ev12 = json.loads((tmp_path / 'cmp' / 'retrieval' / 'T6' / 'seed0' / ('smt' if m == 'teacher' else m) /
                       'eval_T12.json').read_text())
    assert ev12['seq_len'] == 12 and ev12['trained_seq_len'] == 6
    assert g['accuracy'] == ev12['teacher_accuracy' if m == 'teacher' else 'rnn_only_accuracy']
  # Different seeds train different runs; BPTT gets SMT + DMT steps.
  cfgs = [json.loads((tmp_path / 'cmp' / 'retrieval' / 'T6' / f'seed{s}' / 'smt' / 'config.json').read_text())
          for s in (0, 1)]
  assert [c['seed'] for c in cfgs] == [0, 1]
  assert row['bptt']['steps'] == row['smt']['steps'] + row['dmt']['steps'] == 6
  table = (tmp_path / 'cmp' / 'compare_retrieval.md').read_text()
  assert '±' in table and 'Length generalization' in table and '@ 2T' in table
  # A rerun reuses every finished run's eval.json (no training) and its longer-sequence scores.
  monkeypatch.setattr(train, 'train_and_evaluate', _no_training)
  again = compare.run_comparison(tiny_config(), [6], out=out, steps=4, dmt_steps=2, seeds=2, test_lengths=[2])
  assert all(math.isnan(p['train_seconds']) for m in compare.METHODS for p in again['results']['6'][m]['per_seed'])
  assert again['results']['6']['smt']['accuracy'] == summary['results']['6']['smt']['accuracy']


def _no_training(config, workdir, *args, **kwargs):
  raise AssertionError(f'trained {workdir} again')


class _Recorded(Exception):
  """Raised by the recording runner: the study stops before scoring runs that never trained."""


def test_comparison_hands_every_run_to_the_runner(tmp_path, monkeypatch):
  """One call of runner.run_jobs trains every run, with the lanes asked for; DMT waits for its SMT run."""
  calls = []

  def fake_run_jobs(jobs, lanes, *args, **kwargs):
    calls.append((jobs, lanes))
    raise _Recorded

  monkeypatch.setattr(runner, 'run_jobs', fake_run_jobs)
  with pytest.raises(_Recorded):
    compare.run_comparison(tiny_config(), [6, 8], out=str(tmp_path), steps=4, dmt_steps=2, seeds=2, lanes=3)
  [(jobs, lanes)] = calls
  assert lanes == 3
  dirs = [tmp_path / 'retrieval' / f'T{T}' / f'seed{s}' for T in (6, 8) for s in (0, 1)]
  assert [str(j.workdir) for j in jobs] == [str(d / m) for d in dirs for m in compare.METHODS]
  for j in jobs:
    smt = j.workdir.parent / 'smt'
    assert j.after == ((smt,) if j.workdir.name == 'dmt' else ())
    assert (j.config.method, j.config.num_steps, j.config.init_from or '') == {
        'smt': ('smt', 4, ''), 'dmt': ('dmt', 2, str(smt)), 'bptt': ('bptt', 6, '')}[j.workdir.name]
  assert not any(tmp_path.iterdir())  # nothing trained outside the runner


def test_methods_subset_and_bad_arguments(tmp_path):
  s = compare.run_comparison(tiny_config(), [6], out=str(tmp_path), steps=2, methods=['smt'])
  assert s['columns'] == ['teacher', 'smt'] and not (tmp_path / 'retrieval' / 'T6' / 'bptt').exists()
  with pytest.raises(ConfigError, match='dmt needs smt'):
    compare.run_comparison(tiny_config(), [6], out=str(tmp_path), methods=['dmt'])
  with pytest.raises(ConfigError, match='test_lengths'):
    compare.run_comparison(tiny_config(), [6], out=str(tmp_path), test_lengths=[1])
  with pytest.raises(ConfigError, match='lanes'):
    compare.run_comparison(tiny_config(), [6], out=str(tmp_path), lanes=-1)
  bad = tiny_config()
  bad.smt.rollout_steps = 0
  with pytest.raises(ConfigError, match='smt.rollout_steps'):
    compare.run_comparison(bad, [6], out=str(tmp_path / 'bad'))
  assert not (tmp_path / 'bad').exists()


def test_evaluate_on_longer_sequences_rebuilds_the_source(tmp_path):
  """A run trained at T=6 scored at T=24: the held-out batch is the task at that length."""
  c = compare.at_length(tiny_config(), 6, steps=2)
  train.train_and_evaluate(c, str(tmp_path))
  r = runs.evaluate_workdir(str(tmp_path), seq_len=24, num_batches=1)
  assert r['seq_len'] == 24 and r['trained_seq_len'] == 6 and r['read_len'] == 12
  assert (tmp_path / 'eval_T24.json').exists() and not (tmp_path / 'eval.json').exists()
  # retrieval has one target per sequence (the query at the end): batch_size targets
  assert r['num_teacher_targets'] == c.batch_size


def test_compare_command_line_takes_a_config_file(tmp_path):
  r = subprocess.run([sys.executable, '-m', 'experiments.compare', '--config=configs/retrieval.py:small',
                      '--config.smt.rollout_steps=0', f'--out={tmp_path}'], cwd=ROOT, capture_output=True, text=True)
  assert r.returncode != 0 and 'smt.rollout_steps' in r.stderr
  r = subprocess.run([sys.executable, '-m', 'experiments.compare', '--config=configs/retrieval.py:small',
                      '--config.no_such_field=1', f'--out={tmp_path}'], cwd=ROOT, capture_output=True, text=True)
  assert r.returncode != 0 and 'no_such_field' in r.stderr  # the config is locked
  assert not any(tmp_path.iterdir())


def test_comparison_error_bars_stay_inside_what_a_value_can_take(tmp_path):
  nan = float('nan')
  assert plotting.clipped_error_bars([0.9, 0.5], [nan, nan], 0.0, 1.0) is None
  below, above = plotting.clipped_error_bars([0.95, 0.5, 0.1, nan], [0.2, 0.2, 0.3, 0.1], 0.0, 1.0)
  np.testing.assert_allclose(below, [0.2, 0.2, 0.1, 0.0])
  np.testing.assert_allclose(above, [0.05, 0.2, 0.3, 0.0])
  summary = {'task': 'retrieval', 'lengths': [8, 12], 'results': {
      '8': {'smt': {'accuracy': 0.98, 'accuracy_ci': 0.1, 'loss': 0.1, 'loss_ci': 0.3}},
      '12': {'smt': {'accuracy': 0.6, 'accuracy_ci': 0.7, 'loss': 1.2, 'loss_ci': None}}}}
  out = plotting.comparison(summary, tmp_path / 'c.png', ['smt'], {'smt': 'SMT'})
  assert out.exists() and (tmp_path / 'c.png').stat().st_size > 1000
