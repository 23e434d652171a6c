"""Real data at equal wall clock: SMT, SMT->DMT, drift-robust SMT and BPTT (Transformer cell and GRU).

From one config (e.g. configs/tinystories.py:cpu) and a budget of seconds per method, for every seed
(smtjax/studies/wallclock.py has the machinery):

- `smt`: SMT (parallel mode) for the whole budget; its Transformer teacher is the `teacher` column;
- `smt_dmt`: SMT for (1 - dmt_share) of the budget, then DMT fine-tuning for the rest (`smt` is the same run
  continued instead);
- `smt_drift`: SMT with the drift-robust setting that scored best on the validation split (chosen once, on
  the first seed, from `drift_grid`, at `select_share` of the budget), for the whole budget;
- `bptt`: BPTT with the same Transformer cell and readout, for the whole budget;
- `bptt_gru`: BPTT with a GRU cell over the same memory (and the same readout), for the whole budget.

Every run is scored on the held-out test split in bits per token: the RNN reading whole sequences from its
initial memory, per position, and at `test_multiples` times the training length; the teacher from the
encoder's prefix memories. Outputs in `out`: `realdata_<name>.{json,md}`, learning curves against wall clock
(`curves_<name>.png`), loss by position (`positions_<name>.png`) and samples (`samples_<name>.md`, with `.png`
grids for images).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from smtjax import config as config_lib
from smtjax import inference, plotting, runs
from smtjax import workdir as workdir_lib
from smtjax.data import visualize
from smtjax.studies import stats, wallclock
from smtjax.studies.wallclock import Method, Plan  # noqa: F401  (the study's plan, re-exported)

METHODS = (Method('smt', 'SMT', 'smt'), Method('smt_dmt', 'SMT→DMT', 'smt_dmt'),
           Method('smt_drift', 'SMT, drift-robust', 'smt', drift=True),
           Method('bptt', 'BPTT, Transformer cell', 'bptt'),
           Method('bptt_gru', 'BPTT, GRU', 'bptt', overrides=(('model.cell', 'gru'),)))
COLUMNS = ('teacher',) + tuple(m.name for m in METHODS)
NAMES = {'teacher': 'Transformer teacher', **{m.name: m.label for m in METHODS}}


def run_study(config, plan: Plan, out, name: str = '') -> dict:
  """Trains and scores every method for every seed (wallclock.run_study), then writes realdata_<name>.{json,md},
  curves_<name>.png, positions_<name>.png and samples_<name>.md."""
  name = name or config.data.name
  out = workdir_lib.as_path(out)
  summary = wallclock.run_study(config, METHODS, plan, out, teacher_of='smt')
  summary['name'] = name
  summary['runs']['teacher'] = dict(summary['runs']['smt'], parameters=wallclock.parameters(
      config_lib.load_saved(summary['workdirs']['smt']), ('encoder', 'decoder')))
  write_table(summary, out / f'realdata_{name}.md')
  curves = {col: [{'seconds': c['seconds'], 'rnn_only_bits': c['rnn_only_bits']} for c in summary['curves'][col]]
            for col in COLUMNS}
  plotting.learning_curves(curves, out / f'curves_{name}.png', NAMES, title=f'{name}: held-out loss')
  k = max(plan.test_multiples, default=1)
  per_t = {col: r[f'bits_per_t_x{k}' if k > 1 else 'bits_per_t'] for col, r in summary['results'].items()}
  plotting.loss_per_position(per_t, out / f'positions_{name}.png', NAMES, summary['seq_len'],
                             title=f'{name}: held-out loss by position ({k}T)')
  write_samples({m: epath.Path(w) for m, w in summary['workdirs'].items()}, out, name)
  workdir_lib.write_json(out / f'realdata_{name}.json', summary)
  return summary


# ------------------------------------------------------------------------------------------------ samples

def _prompts(config, source, num: int) -> tuple[np.ndarray, int]:
  """(prompts [num, P], continuation length): image data: the top halves of the first test images (each
  starts an image); text: the first half of held-out windows, continued for 1.5 training lengths."""
  info, T = source.info, config.data.seq_len
  if info.kind == 'image':
    P = math.prod(info.image_shape)
    stream = source.stream('test')[:num * P].reshape(num, P)
    return np.asarray(stream[:, :P // 2], np.int32), P - P // 2
  x = source.get_batch('test', 0, 0, num)['x']
  return np.asarray(x[:, :T // 2], np.int32), 3 * T // 2


def write_samples(workdirs: dict[str, epath.Path], out: epath.Path, name: str, num: int = 4,
                  temperature: float = 0.7, seed: int = 0) -> epath.Path:
  """Continuations of the same held-out prompts by the teacher (re-encoding its last T tokens every step) and
  by each method's RNN alone (reading the prompt from its initial memory): samples_<name>.md, and for images
  one PNG grid per writer (prompt on top, continuation below)."""
  lines = [f'# Samples: {name}', '', f'Temperature {temperature}, seed {seed}; prompts from the held-out test split.',
           '']
  for col in COLUMNS:
    config, params, nets, source = runs.load_run(str(workdirs['smt' if col == 'teacher' else col]))
    prompt, length = _prompts(config, source, num)
    rng, p = jax.random.PRNGKey(seed), jnp.asarray(prompt)
    if col == 'teacher':
      toks = inference.teacher_generate(nets, params, p, length, config.data.seq_len, temperature, rng)
    else:
      toks = inference.rnn_generate(nets, params, num, length, temperature, rng, prompt=p)
    toks = np.asarray(jax.device_get(toks))
    lines.append(f'## {NAMES[col]}')
    if source.info.kind == 'image':
      png = out / f'samples_{name}_{col}.png'
      visualize.save_image_grid(source.info, np.concatenate([prompt, toks], axis=1), png, cols=num)
      lines += ['', f'![{NAMES[col]}]({png.name})', '']
    else:
      for a, b in zip(visualize.batch_to_text(source.info, prompt), visualize.batch_to_text(source.info, toks)):
        lines += ['', f'> {a}**{b}**'.replace('\n', ' ')]
      lines.append('')
  path = out / f'samples_{name}.md'
  stats.write_markdown(path, lines)
  return path


# ----------------------------------------------------------------------------------------------- results

def write_table(summary: dict, path) -> str:
  """Markdown: each column's held-out bits per token at T and at k*T (mean ± 95% interval over seeds), its
  steps and step time, and the drift-robust selection."""
  ks, T = summary['test_multiples'], summary['seq_len']
  lines = [f'# {summary["name"]}: equal wall clock ({summary["budget_s"]:.0f} s of one CPU core per method)', '',
           f'Held-out bits per token (test split), the RNN reading whole sequences from its initial memory; the '
           f'teacher from its encoder\'s prefix memories. Seeds {", ".join(map(str, summary["seeds"]))}: mean ± '
           f'95% t-interval. SMT→DMT: DMT for {summary["dmt_share"]:.0%} of the budget. Parameters: the RNN\'s '
           '(cell and readout); the teacher\'s (encoder and decoder).', '']
  rows = []
  for col in COLUMNS:
    r, info = summary['results'][col], summary['runs'][col]
    cells = [stats.fmt(r[f'bits{s}']['mean'], r[f'bits{s}']['ci']) for s in [''] + [f'_x{k}' for k in ks]]
    ratio = info.get('budget_ratio', float('nan'))
    rows.append([NAMES[col]] + cells + [info['steps'], f'{info["seconds_per_step"]:.3f}', f'{ratio:.2f}',
                                        f'{info["parameters"]:,}'])
  lines += stats.table(['method', f'bits/token at T={T}'] + [f'at {k}T={k * T}' for k in ks]
                       + ['steps', 's/step', 'measured s / budget', 'parameters'], rows)
  for name, sel in summary['selection'].items():
    lines += ['', f'{NAMES.get(name, name)}: setting chosen on the validation split (seed {summary["seeds"][0]}, '
              f'{summary["select_share"]:.0%} of the budget per candidate): **{sel["chosen"]}** '
              f'{sel["settings"][sel["chosen"]]}; validation bits per token: '
              + ', '.join(f'{n} {v:.3f}' for n, v in sel['scores'].items()) + '.']
  if not summary['selection']:
    lines += ['', 'No method was tuned: every one ran at its config\'s settings.']
  return stats.write_markdown(path, lines)
