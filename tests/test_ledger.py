"""The results ledger (smtjax/studies/ledger.py): records that survive the machine, and a runner that skips
what they hold."""

import json

import numpy as np
import pytest

from smtjax.errors import WorkdirError
from smtjax.studies import ledger as ledger_lib
from smtjax.studies.runner import Job, run_jobs, with_steps
from tests.conftest import tiny_config


def test_digest_ignores_paths_and_logging_but_not_what_is_trained():
  c = tiny_config()
  d = ledger_lib.digest(c)
  moved = c.copy_and_resolve_references()
  moved.init_from, moved.data.path, moved.log_every, moved.checkpoint_every = '/elsewhere', '/data', 7, 3
  assert ledger_lib.digest(moved) == d
  for field, value in (('optim.lr', 1e-4), ('seed', 5), ('num_steps', 9), ('model.cell', 'gru')):
    other = c.copy_and_resolve_references()
    *parents, leaf = field.split('.')
    node = other
    for p in parents:
      node = node[p]
    node[leaf] = value
    assert ledger_lib.digest(other) != d, field
  other = c.copy_and_resolve_references()
  other.curriculum.length, other.curriculum.steps = 4, 2
  assert ledger_lib.digest(other) != d


def test_committed_records_keep_matching_their_configs():
  """A record in docs/results/runs/ stays found by the config that made it: a config field added with its
  'off' value (ledger.OFF) must not change the digests of runs that leave it off."""
  from smtjax import config as config_lib
  from smtjax.studies import recipe
  c = config_lib.load_config('configs/copy.py:small')
  jobs = recipe.plan_jobs(c, [recipe.parse_arm('transformer:method="transformer"')], [0], 1000, 10, '/tmp/unused')
  assert ledger_lib.digest(jobs[('transformer', 0)][0].config) == 'a712651dca163ef4'  # copy/T12/transformer/seed0


def test_records_round_trip_with_nan_and_a_bad_line_is_named(tmp_path):
  c = tiny_config()
  path = tmp_path / 'runs' / 'study.jsonl'
  book = ledger_lib.Ledger(path)
  record = {'name': 'a/seed0', 'digest': ledger_lib.digest(c), 'curves': {'steps': [4, 8], 'x': [0.5, float('nan')]},
            'final': {'x': float('nan')}, 'scores': {}}
  book.append(record)
  again = ledger_lib.Ledger(path).get('a/seed0', c)
  assert again['curves']['x'][0] == 0.5 and np.isnan(again['curves']['x'][1]) and np.isnan(again['final']['x'])
  assert ledger_lib.Ledger(path).get('a/seed1', c) is None
  path.write_text(path.read_text() + 'not json\n')
  with pytest.raises(WorkdirError, match='line 2'):
    ledger_lib.Ledger(path)


def _jobs(root):
  c = with_steps(tiny_config(), 8, 2)
  first = Job(root / 'smt', c, name='study/smt')
  then = c.copy_and_resolve_references()
  then.init_from = str(first.workdir)
  return first, Job(root / 'then', then, after=(first.workdir,), name='study/then')


def test_runner_records_finished_runs_and_trains_only_what_the_ledger_lacks(tmp_path):
  book_path = tmp_path / 'runs.jsonl'
  first, then = _jobs(tmp_path / 'a')
  records = run_jobs([first, then], 0, ledger_lib.Ledger(book_path))
  assert [json.loads(line)['name'] for line in book_path.read_text().splitlines()] == ['study/smt', 'study/then']
  rec = records[str(then.workdir)]
  assert rec['steps'] == 8 and rec['curves']['steps'] == [4, 8] and 'rnn_only_accuracy' in rec['final']
  assert rec['seconds_per_update'] > 0 and rec['device'] and rec['commit']
  # Another machine (fresh workdirs), the same ledger: nothing trains, every record comes back.
  first_b, then_b = _jobs(tmp_path / 'b')
  again = run_jobs([first_b, then_b], 0, ledger_lib.Ledger(book_path))
  assert not (tmp_path / 'b').exists()
  assert again[str(then_b.workdir)]['final'] == rec['final']
  # A ledger without the second run: the first is trained again, its checkpoint being needed here.
  partial = tmp_path / 'partial.jsonl'
  partial.write_text(book_path.read_text().splitlines()[0] + '\n')
  first_c, then_c = _jobs(tmp_path / 'c')
  run_jobs([first_c, then_c], 0, ledger_lib.Ledger(partial))
  assert (first_c.workdir / 'checkpoints').is_dir() and (then_c.workdir / 'checkpoints').is_dir()
  assert len(partial.read_text().splitlines()) == 2  # the first is not recorded twice
  # Report mode trains nothing and says what is missing.
  first_d, then_d = _jobs(tmp_path / 'd')
  missing = run_jobs([first_d, then_d], 0, ledger_lib.Ledger(tmp_path / 'empty.jsonl'), train_missing=False)
  assert missing == {str(first_d.workdir): None, str(then_d.workdir): None} and not (tmp_path / 'd').exists()
