"""The notebooks under experiments/notebooks run top to bottom (tiny settings) and are committed clean."""

import json

import pytest

from tests.conftest import ROOT

NOTEBOOKS = ROOT / 'experiments' / 'notebooks'


def _execute(path, tmp_path):
  nbformat = pytest.importorskip('nbformat')
  nbclient = pytest.importorskip('nbclient')
  nb = nbformat.read(path, as_version=4)
  nbclient.NotebookClient(nb, timeout=600, kernel_name='python3',
                          resources={'metadata': {'path': str(tmp_path)}}).execute()
  return nb


@pytest.mark.parametrize('name', ['memory_2d.ipynb', 'samples.ipynb'])
def test_notebooks_are_committed_without_outputs(name):
  nb = json.loads((NOTEBOOKS / name).read_text())
  for cell in nb['cells']:
    if cell['cell_type'] == 'code':
      assert cell['outputs'] == [] and cell['execution_count'] is None


@pytest.mark.slow
def test_memory_2d_notebook_runs(tmp_path, monkeypatch):
  monkeypatch.setenv('SMTJAX_NB_WORKDIR', str(tmp_path / 'runs'))
  monkeypatch.setenv('SMTJAX_NB_RUNS', 'retrieval:mem2d,copy:mem3d')
  monkeypatch.setenv('SMTJAX_NB_STEPS', '2')
  monkeypatch.setenv('SMTJAX_NB_SEQUENCES', '8')
  nb = _execute(NOTEBOOKS / 'memory_2d.ipynb', tmp_path)
  text = ''.join(o.get('text', '') for c in nb.cells if c.cell_type == 'code' for o in c.outputs)
  assert 'nearest-state accuracy' in text
  for run in ('retrieval_mem2d', 'copy_mem3d'):
    for f in ('memory_teacher.png', 'memory_rnn.png', 'geometry.json'):
      assert (tmp_path / 'runs' / run / f).stat().st_size > 0
  assert json.loads((tmp_path / 'runs' / 'copy_mem3d' / 'geometry.json').read_text())['mem_dim'] == 3
  assert (tmp_path / 'runs' / 'over_time.png').exists()


@pytest.mark.slow
def test_samples_notebook_runs(tmp_path, monkeypatch, shared_data):
  monkeypatch.setenv('SMTJAX_DATA_DIR', str(shared_data))
  monkeypatch.setenv('SMTJAX_NB_MNIST_WORKDIR', str(tmp_path / 'mnist'))
  monkeypatch.setenv('SMTJAX_NB_TINYSTORIES_WORKDIR', str(tmp_path / 'tinystories'))
  monkeypatch.setenv('SMTJAX_NB_STEPS', '1')
  monkeypatch.setenv('SMTJAX_NB_SAMPLES', '2')
  monkeypatch.setenv('SMTJAX_NB_MODES', 'rnn,rnn_only')
  _execute(NOTEBOOKS / 'samples.ipynb', tmp_path)
  for mode in ('rnn', 'rnn_only'):
    assert (tmp_path / 'mnist' / f'samples_{mode}.png').stat().st_size > 0
    assert 'continuation:' in (tmp_path / 'tinystories' / f'samples_{mode}.txt').read_text()
