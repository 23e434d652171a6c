"""Bring-your-own data from the command line: configs/arrays.py and configs/tokens.py take T and the
vocabulary from the file, check them, and name the file in every error."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from smtjax import config as config_lib
from smtjax.data import DataError, make_source
from smtjax.metrics import read_metrics

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ['--config.model.d_model=16', '--config.model.num_heads=2', '--config.model.enc_depth=1',
        '--config.model.dec_depth=1', '--config.model.cell_depth=1', '--config.batch_size=8', '--config.num_steps=4',
        '--config.log_every=2', '--config.eval_every=4', '--config.checkpoint_every=4', '--config.num_eval_batches=1',
        '--config.progress_bar=False']


def _task(n=64, T=10, vocab=6, seed=0):
  """A copy task: the first half repeated; targets only on the second half (-1 elsewhere)."""
  rng = np.random.default_rng(seed)
  half = rng.integers(0, vocab, (n, T // 2))
  x = np.concatenate([half, half], axis=1)
  y = np.full_like(x, -1)
  y[:, T // 2 - 1:-1] = x[:, T // 2:]
  return x, y


def _load(name, variant=''):
  return config_lib.load_config(f'{ROOT}/configs/{name}.py:{variant}')


def _resolved(c):
  src = make_source(c.data, c.seed)
  return config_lib.infer_from_data(c, src.info.seq_len, src.info.vocab_size), src


def test_arrays_config_trains_on_a_written_npz_from_the_command_line(tmp_path):
  x, y = _task()
  np.savez(tmp_path / 'task.npz', x=x[:56], y=y[:56], x_test=x[56:], y_test=y[56:])
  wd = tmp_path / 'run'
  r = subprocess.run([sys.executable, '-m', 'experiments.run', '--config=configs/arrays.py',
                      f'--config.data.path={tmp_path / "task.npz"}', f'--workdir={wd}', *TINY],
                     cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  saved = json.loads((wd / 'config.json').read_text())
  assert saved['data']['seq_len'] == 10 and saved['model']['vocab_size'] == int(x.max()) + 1
  assert saved['smt']['future'] == 10  # capped at the inferred T
  records = read_metrics(wd)
  assert [r['step'] for r in records] == [2, 4] and 'loss_test' in records[-1]
  assert r.stdout.count('final:') == 1


@pytest.mark.parametrize('variant', ['', 'small', 'gpu'])
def test_bring_your_own_configs_infer_and_validate(tmp_path, variant):
  x, y = _task(T=12, vocab=7)
  np.savez(tmp_path / 't.npz', x=x, y=y)
  c = _load('arrays', variant)
  c.data.path = str(tmp_path / 't.npz')
  c, src = _resolved(c)
  assert (c.data.seq_len, c.model.vocab_size, src.info.seq_len) == (12, 7, 12)
  config_lib.validate(c, num_devices=1, data_vocab_size=src.info.vocab_size)

  np.save(tmp_path / 's.npy', np.random.default_rng(0).integers(0, 300, 60000))
  c = _load('tokens', variant)
  c.data.path = str(tmp_path / 's.npy')
  T = c.data.seq_len
  c, src = _resolved(c)
  assert c.data.seq_len == T and c.model.vocab_size == src.info.vocab_size == 300
  config_lib.validate(c, num_devices=1, data_vocab_size=src.info.vocab_size)


def test_inferred_length_without_y_is_the_width_of_x(tmp_path):
  """Without y, T is the width of x: next-token targets, none at the last step."""
  x, _ = _task(T=10, vocab=6)
  np.savez(tmp_path / 'x.npz', x=x)
  c = _load('arrays')
  c.data.path = str(tmp_path / 'x.npz')
  c, src = _resolved(c)
  assert (c.data.seq_len, c.model.vocab_size, c.smt.future) == (10, 6, 10)
  b = src.get_batch('train', 0, 0, 4)
  np.testing.assert_array_equal(b['y'][:, :-1], b['x'][:, 1:])
  assert (b['y'][:, -1] == -1).all()
  assert config_lib.infer_from_data(c, 99, 99) is c  # nothing left to infer


def test_errors_name_the_file(tmp_path):
  x, y = _task(T=10, vocab=6)
  np.savez(tmp_path / 'train.npz', x=x, y=y)
  np.savez(tmp_path / 'short.npz', x=x[:, :8], y=y[:, :8])
  c = _load('arrays')
  c.data.path = str(tmp_path / 'train.npz')
  c.data.options.test_path = str(tmp_path / 'short.npz')
  with pytest.raises(DataError,
                     match=r'short\.npz: x holds sequences of length 8, but the length of x in .*train\.npz'):
    make_source(c.data, 0)
  c.data.options.test_path = ''
  c.data.options.vocab_size = 4  # tokens 4 and 5 fall outside
  with pytest.raises(DataError, match=r'train\.npz: x has token [45] .* outside the vocabulary \[-1, 4\)'):
    make_source(c.data, 0)
  np.save(tmp_path / 'tiny.npy', np.arange(10))
  c = _load('tokens')
  c.data.path = str(tmp_path / 'tiny.npy')
  with pytest.raises(DataError, match=r'window of seq_len\+1 = 65 tokens .*tiny\.npy: 9 tokens'):
    make_source(c.data, 0)
