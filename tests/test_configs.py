"""Every config file and variant builds, validates against its data source, and rejects unknown variants."""

import importlib.util
import pathlib

import pytest

from smtjax import config as config_lib
from smtjax.data import make_source

CONFIGS = sorted((pathlib.Path(__file__).resolve().parents[1] / 'configs').glob('*.py'))
SYNTHETIC = ('retrieval', 'copy', 'stack', 'keys_values', 'modular', 'parity')
BRING_YOUR_OWN = ('arrays', 'tokens')  # need a data file to infer T / vocabulary: tests/test_byo.py


def _load(path):
  spec = importlib.util.spec_from_file_location(path.stem, path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.stem)
def test_config_variants_validate(path):
  if path.stem in BRING_YOUR_OWN:
    pytest.skip('validated against a written data file in tests/test_byo.py')
  mod = _load(path)
  variants = ['', 'small'] + (['gpu'] if path.stem in SYNTHETIC else ['dmt', 'small_dmt'])
  variants += ['small_dmt'] if path.stem == 'retrieval' else []
  variants += ['mem2d', 'mem3d'] if path.stem in ('retrieval', 'copy') else []
  for v in variants:
    c = mod.get_config(v)
    if c.method == 'dmt':
      c.init_from = '/some/smt/run'
    config_lib.validate(c, num_devices=1)
    if path.stem in SYNTHETIC:  # real datasets are checked against files in test_data_real.py
      src = make_source(c.data, 0)
      config_lib.validate(c, data_vocab_size=src.info.vocab_size)
      assert src.info.seq_len == c.data.seq_len
  with pytest.raises(ValueError, match='nope'):
    mod.get_config('nope')
