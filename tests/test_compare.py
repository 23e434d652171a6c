"""experiments.compare / smtjax.compare: the tiny preset end to end (SMT, SMT->DMT, BPTT per length).

One length keeps the test to a few compilations; the table and plot code is the same for any number."""

import json
import math

from smtjax.studies import compare


def test_dmt_lengths_fit():
  for T in (3, 6, 8, 12, 32, 512, 4096):
    Tc, Td, k = compare.dmt_lengths(T)
    assert Tc >= 1 and Td >= 1 and Td % k == 0 and Tc + Td <= T


def test_tiny_retrieval_comparison(tmp_path):
  out = str(tmp_path / 'cmp')
  summary = compare.run_comparison('retrieval', [6], preset='tiny', out=out)
  for ext in ('json', 'md', 'png'):
    assert (tmp_path / 'cmp' / f'compare_retrieval.{ext}').stat().st_size > 0
  data = json.loads((tmp_path / 'cmp' / 'compare_retrieval.json').read_text())
  assert data['lengths'] == [6]
  for length in ('6',):
    row = data['results'][length]
    for m in ('teacher', 'smt', 'dmt', 'bptt'):
      for key in ('loss', 'accuracy'):
        v = row[m][key]
        assert v is not None and math.isfinite(v), (length, m, key, v)
    # Same budget: BPTT runs as many steps as SMT and DMT together.
    assert row['bptt']['steps'] == row['smt']['steps'] + row['dmt']['steps']
  table = (tmp_path / 'cmp' / 'compare_retrieval.md').read_text().splitlines()
  rows = [l for l in table if l.startswith('| ') and l.split('|')[1].strip().isdigit()]
  assert [l.split('|')[1].strip() for l in rows] == ['6']
  # A rerun reuses every finished run's eval.json (no training).
  again = compare.run_comparison('retrieval', [6], preset='tiny', out=out)
  assert all(math.isnan(again['results'][L][m]['train_seconds']) for L in ('6',) for m in compare.METHODS)
  assert again['results']['6']['smt']['accuracy'] == summary['results']['6']['smt']['accuracy']
