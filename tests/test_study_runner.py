"""The studies' runner (smtjax/studies/runner.py): run names, lanes pinned to cores, jobs in dependency order,
continuations, the workdir guard and a curriculum run's resumption."""

import os

import pytest

from smtjax import train
from smtjax.errors import ConfigError
from smtjax.studies import runner, wallclock
from tests.conftest import tiny_config


def test_run_keys_name_runs_in_files_and_read_back():
  key = runner.RunKey('smt_dmt', wallclock.START)
  assert str(key) == 'smt_dmt:start' and key.dirname == 'smt_dmt_start' and str(key.tuned('lr0.001')) == (
      'smt_dmt:start|lr0.001')
  for k in (key, key.tuned('lr0.001'), runner.RunKey('bptt'), runner.RunKey('memory tokens K', candidate='K=1')):
    assert runner.RunKey.parse(str(k)) == k
  assert runner.RunKey('smt', candidate='gru_lr0.001').dirname == 'smt_gru_lr0.001'  # claims' run folders
  assert runner.RunKey('bptt') != 'bptt'  # a key is never mistaken for a bare name
  with pytest.raises(ValueError, match='neither'):
    runner.RunKey('a|b')


def test_lanes_pin_to_the_cores_this_process_may_use(monkeypatch, tmp_path):
  monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: {3, 1}, raising=False)
  assert runner.lane_cores(1) == [1] and runner.lane_cores(2) == [1, 3] and runner.lane_cores(0) == []
  launched = []

  class Finished:
    returncode = 0

    def poll(self):
      return 0

  monkeypatch.setattr(runner, '_launch', lambda workdir, core: launched.append((workdir.name, core)) or Finished())
  runner.run_jobs([runner.Job(tmp_path / 'a', tiny_config())], lanes=1)
  assert launched == [('a', 1)]  # a single lane is pinned too, to the first core an outer taskset allows


def test_in_process_lanes_train_jobs_in_dependency_order(tmp_path):
  c = tiny_config()
  c.num_steps, c.eval_every, c.checkpoint_every, c.log_every, c.num_eval_batches = 2, 2, 2, 1, 1
  first, second = tmp_path / 'first', tmp_path / 'second'
  jobs = [runner.Job(second, c, after=(first,), copy_from=first), runner.Job(first, c)]
  runner.run_jobs(jobs, lanes=0)
  for wd in (first, second):
    assert runner._done(runner.Job(wd, c)) and not (wd / 'run.log').exists()
  assert 0 < wallclock.trained_seconds(first) < 60
  with pytest.raises(RuntimeError, match='no job trains'):
    runner.run_jobs([runner.Job(tmp_path / 'x', c, after=(tmp_path / 'nowhere',))], lanes=0)
  other = c.copy_and_resolve_references()
  other.optim.lr = c.optim.lr / 2  # same workdir, another run: its finished metrics must not pass for this one's
  with pytest.raises(ConfigError, match='holds another run'):
    runner.run_jobs([runner.Job(tmp_path / 'fresh', c), runner.Job(first, other)], lanes=0)
  assert not (tmp_path / 'fresh').exists()  # refused before anything trained


def test_a_curriculum_run_resumes_in_its_workdir(tmp_path):
  """Its workdir's config.json is the full-length stage's (no curriculum, init_from its first stage), which
  must not read as another run's."""
  c = tiny_config()
  c.num_steps, c.eval_every, c.checkpoint_every, c.log_every, c.num_eval_batches = 2, 2, 2, 1, 1
  c.curriculum.length, c.curriculum.steps = 4, 1
  job = runner.Job(tmp_path / 'run', c)
  train.train_and_evaluate(c, job.workdir)
  runner._check_workdir(job)  # the same run: accepted
  other = c.copy_and_resolve_references()
  other.curriculum.steps = 2
  with pytest.raises(ConfigError, match='holds another run'):
    runner._check_workdir(runner.Job(job.workdir, other))
