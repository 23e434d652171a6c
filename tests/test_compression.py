"""smtjax.compression: the (memory size x steps) grid holds exactly the runs' logged evaluations."""

import json
import subprocess
import sys

import pytest

from smtjax import train
from smtjax.config import ConfigError
from smtjax.studies import compression, runner, stats
from tests.conftest import ROOT, tiny_config


def test_sweep_config_sets_width_and_evaluation_points():
  c = compression.sweep_config(tiny_config(), mem_dim=3, num_steps=20, num_evals=4)
  assert c.model.mem_dim == 3 and c.num_steps == 20 and c.eval_every == 5 and c.checkpoint_every == 5
  with pytest.raises(ConfigError, match='num_evals'):
    compression.sweep_config(tiny_config(), 2, num_steps=4, num_evals=5)


@pytest.mark.slow
def test_compression_grid_equals_the_runs_metrics(tmp_path, monkeypatch):
  c = tiny_config()
  c.model.num_mem_tokens = 1
  result = compression.run_compression(c, [4, 2], str(tmp_path), num_steps=4, num_evals=2)
  assert result['mem_dims'] == [2, 4] and result['mem_sizes'] == [2, 4] and result['steps'] == [2, 4]
  for d, row in zip(result['mem_dims'], result['grids']['loss_dec_test']):
    evals = compression.read_evals(str(tmp_path / f'Z{d}'))
    assert row == [evals[s]['loss_dec_test'] for s in (2, 4)]
    cfg = json.loads((tmp_path / f'Z{d}' / 'config.json').read_text())
    assert cfg['model']['mem_dim'] == d
  assert 'rnn_only_loss' in result['grids']
  saved = json.loads((tmp_path / 'compression.json').read_text())
  assert saved['grids'] == result['grids']
  assert (tmp_path / 'compression.png').stat().st_size > 1000
  assert '| 2 |' in (tmp_path / 'compression.md').read_text()
  # A rerun reuses the finished runs (same numbers, nothing retrained).
  monkeypatch.setattr(train, 'train_and_evaluate', _no_training)
  again = compression.run_compression(c, [2, 4], str(tmp_path), num_steps=4, num_evals=2)
  assert again['grids'] == result['grids']
  with pytest.raises(ValueError, match='not logged'):
    compression.run_compression(c, [2], str(tmp_path), num_steps=4, num_evals=2, metric='nope')


def _no_training(config, workdir, *args, **kwargs):
  raise AssertionError(f'trained {workdir} again')


class _Recorded(Exception):
  """Raised by the recording runner: the study stops before reading runs that never trained."""


def test_compression_hands_every_run_to_the_runner(tmp_path, monkeypatch):
  """One call of runner.run_jobs trains every run (memory width x seed), with the lanes asked for."""
  calls = []

  def fake_run_jobs(jobs, lanes, *args, **kwargs):
    calls.append((jobs, lanes))
    raise _Recorded

  monkeypatch.setattr(runner, 'run_jobs', fake_run_jobs)
  c = tiny_config()
  c.model.num_mem_tokens = 1
  with pytest.raises(_Recorded):
    compression.run_compression(c, [4, 2], str(tmp_path), num_steps=4, num_evals=2, seeds=2, lanes=2)
  [(jobs, lanes)] = calls
  assert lanes == 2
  assert [str(j.workdir) for j in jobs] == [str(tmp_path / f'Z{d}' / f'seed{s}') for d in (2, 4) for s in (0, 1)]
  assert [(j.config.model.mem_dim, j.config.seed, j.config.eval_every, j.after) for j in jobs] == [
      (2, 0, 2, ()), (2, 1, 2, ()), (4, 0, 2, ()), (4, 1, 2, ())]
  assert not any(tmp_path.iterdir())  # nothing trained outside the runner
  with pytest.raises(ConfigError, match='lanes'):
    compression.run_compression(c, [2], str(tmp_path), lanes=-1)


def test_compress_command_line_rejects_bad_widths(tmp_path):
  r = subprocess.run([sys.executable, '-m', 'experiments.compress', '--config=configs/copy.py:small',
                      '--mem_dims=0,2', f'--out={tmp_path}'], cwd=ROOT, capture_output=True, text=True)
  assert r.returncode != 0 and 'memory widths must be positive' in r.stderr
  assert not any(tmp_path.iterdir())


def test_compression_with_seeds_reports_mean_and_interval(tmp_path):
  c = tiny_config()
  c.model.num_mem_tokens = 1
  result = compression.run_compression(c, [2], str(tmp_path), num_steps=2, num_evals=1, seeds=2)
  assert result['seeds'] == [0, 1] and result['steps'] == [2]
  runs = [compression.read_evals(str(tmp_path / 'Z2' / f'seed{s}'))[2]['loss_dec_test'] for s in (0, 1)]
  assert runs[0] != runs[1]  # two seeds, two different runs
  st = stats.mean_ci(runs)
  assert result['grids_per_seed']['loss_dec_test'] == [[[runs[0]], [runs[1]]]]
  assert result['grids']['loss_dec_test'][0][0] == pytest.approx(st['mean'])
  assert result['grids_ci']['loss_dec_test'][0][0] == pytest.approx(st['ci'])
  assert '±' in (tmp_path / 'compression.md').read_text()
