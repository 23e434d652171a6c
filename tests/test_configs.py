"""Every config file and variant builds, validates against its data source, and rejects unknown variants."""

import importlib.util
import pathlib
import subprocess
import sys

import pytest

from smtjax import config as config_lib
from smtjax.data import make_source
from tests.conftest import ROOT

CONFIGS = sorted((pathlib.Path(__file__).resolve().parents[1] / 'configs').glob('*.py'))
SYNTHETIC = ('retrieval', 'copy', 'stack', 'keys_values', 'modular', 'parity', 'counting')
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


def test_variants_compose_and_override():
  retrieval = _load(CONFIGS[[p.stem for p in CONFIGS].index('retrieval')])
  small = retrieval.get_config('small')
  c = retrieval.get_config('small,gru,bptt,model.d_model=48,smt.coef_dyn=0.25,progress_bar=false')
  assert (c.model.cell, c.method, c.model.d_model, c.smt.coef_dyn, c.progress_bar) == ('gru', 'bptt', 48, 0.25, False)
  assert c.data.seq_len == small.data.seq_len == 12 and c.optim.lr == small.optim.lr  # the size is 'small'
  # Order matters: modifiers and overrides apply left to right, after the size wherever it is named.
  assert retrieval.get_config('model.d_model=48,small').model.d_model == 48
  # The common 'dmt' modifier derives DMT for a parallel-mode config at its own length.
  d = retrieval.get_config('small,dmt')
  assert d.method == 'dmt' and d.dmt.context + d.dmt.rollout == d.data.seq_len and d.dmt.rollout % d.dmt.every == 0
  # The old single names keep meaning what they meant.
  assert retrieval.get_config('small_dmt').dmt.rollout == 10 and retrieval.get_config('mem2d').model.mem_dim == 2
  assert retrieval.get_config('mem2d,mlp').model.cell == 'mlp'


@pytest.mark.parametrize('arg, match', [
    ('small,gpu', 'more than one size'),
    ('small,nope', "unknown variant 'nope'"),
    ('small,model.nope=3', 'config.model.nope: no such field'),
    ('small,nope.x=3', 'config.nope.x: no such field'),
    ('small,model.dmodel=3', 'config.model.dmodel: no such field; did you mean config.model.d_model'),
    ('small,model.d_model=wide', 'model.d_model'),
])
def test_bad_variants_name_what_is_wrong(arg, match):
  retrieval = _load(CONFIGS[[p.stem for p in CONFIGS].index('retrieval')])
  with pytest.raises(config_lib.ConfigError, match=match):
    retrieval.get_config(arg)


def test_load_config_takes_a_path_with_variants(tmp_path):
  path = [p for p in CONFIGS if p.stem == 'copy'][0]
  c = config_lib.load_config(f'{path}:small,model.num_mem_tokens=3')
  assert c.data.name == 'copy' and c.model.num_mem_tokens == 3
  with pytest.raises(config_lib.ConfigError, match='not found'):
    config_lib.load_config(str(tmp_path / 'missing.py'))


@pytest.mark.parametrize('override, line', [
    ('--config.model.dmodel=3', 'error: config.model.dmodel: no such field; did you mean config.model.d_model?'),
    ('--config.modle.d_model=3', 'error: config.modle.d_model: no such field; did you mean config.model.d_model?'),
    ('--config.model.d_model=abc', "error: config.model.d_model: expected int, got 'abc'"),
    ('--config.smt.coef_dyn=high', "error: config.smt.coef_dyn: expected float, got 'high'"),
])
def test_a_misspelt_or_mistyped_override_is_one_line(tmp_path, override, line):
  """The command line names the field (and the nearest known one) in one line, before anything runs."""
  r = subprocess.run([sys.executable, '-m', 'experiments.run', '--config=configs/retrieval.py:small', override,
                      f'--workdir={tmp_path / "run"}'], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert r.returncode != 0
  assert r.stderr.strip().splitlines() == [line], r.stderr[-2000:]
  assert not (tmp_path / 'run').exists()


def test_a_missing_config_file_is_one_line(tmp_path):
  r = subprocess.run([sys.executable, '-m', 'experiments.run', '--config=configs/nosuch.py:small',
                      f'--workdir={tmp_path / "run"}'], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert r.returncode != 0
  assert r.stderr.strip().splitlines() == ['error: --config=configs/nosuch.py:small: no config file configs/nosuch.py']


@pytest.mark.parametrize('t', [-1.0, float('nan'), float('inf')])
def test_a_bad_sampling_temperature_is_refused_before_loading(t):
  from smtjax import runs
  with pytest.raises(config_lib.ConfigError, match='^temperature: must be a finite number >= 0'):
    runs.sample_workdir('/no/such/run', temperature=t)
  c = config_lib.default_config()
  c.sample.temperature = t
  with pytest.raises(config_lib.ConfigError, match='config.sample.temperature: must be a finite number >= 0'):
    config_lib.validate(c)


def test_every_model_field_is_defined_once_and_classified():
  """config.model, the saved-config upgrade and the resume check all come from MODEL_FIELDS; every field the
  networks read (ModelConfig) is one of them, and only numerics and memory layout may change on resume."""
  import dataclasses
  assert list(config_lib.default_config().model.keys()) == sorted(config_lib.MODEL_FIELDS)  # ConfigDict sorts
  networks_read = {f.name for f in dataclasses.fields(config_lib.ModelConfig)}
  assert networks_read <= set(config_lib.MODEL_FIELDS), networks_read - set(config_lib.MODEL_FIELDS)
  assert all(f.check in ('always', 'resume', '') for f in config_lib.MODEL_FIELDS.values())
  free = {k for k, f in config_lib.MODEL_FIELDS.items() if not f.check}
  assert free == {'mem_size', 'dtype', 'residual_dtype', 'remat', 'prefix_chunk'}, free
  resume_only = set(config_lib.checked_model_fields(True)) - set(config_lib.checked_model_fields(False))
  assert resume_only == {'model.initial_memory', 'model.attn_window'}, resume_only
  assert {'model.cell_options', 'model.cell_residual'} <= set(config_lib.checked_model_fields(False))
  a, b = config_lib.default_config(), config_lib.default_config()
  a.model.cell_options.r_min = 0.5  # each config gets fresh mutable defaults
  assert 'r_min' not in b.model.cell_options and b.model.mem_size is None


def test_every_field_is_defined_once_in_its_sections_table():
  """default_config() has exactly the tables' fields, each with its default and a meaning; every choice is named
  in its field's meaning, and a value outside the choices is refused naming the field."""
  c = config_lib.default_config()
  assert set(c.keys()) == set(config_lib.TOP_FIELDS) | {s for s in config_lib.SECTIONS if s}
  for section, fields in config_lib.SECTIONS.items():
    node = c[section] if section else c
    if section:
      assert set(node.keys()) == set(fields), (section, set(node.keys()) ^ set(fields))
    for name, f in fields.items():
      assert f.doc.strip(), f'{section}.{name} has no meaning'
      assert f.check in ('always', 'resume', '') and (not f.check or fields is config_lib.MODEL_FIELDS), name
      assert all(repr(v) in f.doc for v in f.choices), f'{section}.{name}: its meaning does not name every choice'
      assert not f.choices or node[name] in f.choices, f'{section}.{name}: the default is not one of the choices'


CHOICES = [(s, k) for s, fields in config_lib.SECTIONS.items() for k, f in fields.items() if f.choices]


@pytest.mark.parametrize('section, name', CHOICES, ids=[f'{s}.{k}'.lstrip('.') for s, k in CHOICES])
def test_a_value_outside_a_fields_choices_is_refused(section, name):
  c = config_lib.default_config()
  (c[section] if section else c)[name] = 'nope'
  path = f'{section}.{name}'.lstrip('.')
  with pytest.raises(config_lib.ConfigError, match=f"^config.{path}: unknown value 'nope'; expected one of "):
    config_lib.validate(c)


def test_the_docs_field_reference_is_generated_from_the_tables():
  """docs/configs.md's field reference is config.reference_markdown(): after changing a table, replace the text
  between the two markers with its output."""
  text = (ROOT / 'docs' / 'configs.md').read_text()
  begin = '<!-- Generated by smtjax.config.reference_markdown(); tests/test_configs.py checks it. -->\n'
  end = '<!-- End of the generated field reference. -->'
  assert text.count(begin) == 1 and text.count(end) == 1
  assert text.split(begin)[1].split(end)[0] == config_lib.reference_markdown()
