"""SMT vs SMT->DMT vs BPTT on a synthetic task across sequence lengths (method.md §10, issue 7).

For every length, three runs of the same RNN architecture and step budget:

- `smt`: parallel-mode SMT (the task's config, `small` or `gpu` variant, resized to the length);
- `dmt`: DMT fine-tuning (`variants.dmt`) initialised from the SMT run;
- `bptt`: the BPTT baseline (`config.method='bptt'`), same cell, as many steps as SMT + DMT together.

Each is scored by `inference.evaluate_workdir`: the RNN reads whole held-out sequences from its initial
memory (`rnn_only_loss` / `rnn_only_accuracy`); the SMT run's Transformer teacher (`teacher_loss` /
`teacher_accuracy`) is the upper bound. Workdirs: `<out>/<task>/T<length>/{smt,dmt,bptt}`; a run whose
`eval.json` exists (with the same number of steps) is not trained again. Results:
`<out>/compare_<task>.{json,md,png}`.

For keys_values the swept "length" is the number of key/value pairs (the sequence length follows from it,
as in configs/keys_values.py); for the other tasks it is `data.seq_len`.
"""

from __future__ import annotations

import json
import math
import time

from absl import logging
from etils import epath

from smtjax import config as config_lib
from smtjax import plotting, runs, train, variants
from smtjax import workdir as workdir_lib
from smtjax.errors import ConfigError

TASKS = ('retrieval', 'copy', 'stack', 'keys_values', 'modular')
PRESETS = ('tiny', 'cpu', 'gpu')
METHODS = ('smt', 'dmt', 'bptt')
DENSE_TASKS = ('stack', 'modular')  # configs/stack.py, modular.py: smt.future = min(T, 16)
METHOD_NAMES = {'teacher': 'Transformer teacher', 'smt': 'SMT', 'dmt': 'SMT→DMT', 'bptt': 'BPTT'}

# Default lengths per preset (keys_values: numbers of pairs).
DEFAULT_LENGTHS = {
    'tiny': {'retrieval': (6, 8), 'copy': (6, 8), 'stack': (6, 8), 'keys_values': (1, 2), 'modular': (6, 8)},
    # retrieval: the teacher does not learn T >= 32 within the cpu budget (measured: README "Results").
    'cpu': {'retrieval': (8, 12, 16), 'copy': (8, 16, 32), 'stack': (8, 16, 32), 'keys_values': (2, 4, 8),
            'modular': (8, 16, 32)},
    # method.md §10: retrieval to T=512 (noise 0.3, the gpu variant), string copy to T=4096 with M=64,
    # stacks of depth 5 (the gpu variant) around T=64.
    'gpu': {'retrieval': (64, 128, 256, 512), 'copy': (128, 256, 512, 1024, 2048, 4096),
            'stack': (32, 64, 128, 256), 'keys_values': (8, 16, 32, 64), 'modular': (32, 64, 128, 256)},
}

# Step budgets per preset: (SMT steps, DMT steps); BPTT gets their sum.
STEPS = {'tiny': (4, 2), 'cpu': (1000, 200), 'gpu': (20000, 5000)}


def load_task_config(task: str, variant: str):
  """configs/<task>.py's get_config(variant)."""
  if task not in TASKS:
    raise ConfigError(f'unknown task {task!r}; expected one of {", ".join(TASKS)}')
  return config_lib.load_config(f'configs/{task}.py:{variant}')


def _largest_pow2_at_most(n: int) -> int:
  p = 1
  while p * 2 <= n:
    p *= 2
  return p


def dmt_lengths(T: int, max_every: int = 16) -> tuple[int, int, int]:
  """(Tc, Td, k) for a parallel-mode teacher on length T: k a power of two near T/8 (at most max_every),
  Td the largest multiple of k below T, Tc = T - Td >= 1 (the rollout reaches the end of the sequence)."""
  k = min(max_every, _largest_pow2_at_most(max(1, T // 8)))
  Td = ((T - 1) // k) * k
  return T - Td, Td, k


def smt_config(task: str, length: int, preset: str, steps: int | None = None):
  """The SMT run's config for `task` at `length` under `preset` (steps: SMT steps, default the preset's)."""
  if preset not in PRESETS:
    raise ConfigError(f'unknown preset {preset!r}; expected one of {", ".join(PRESETS)}')
  c = load_task_config(task, 'gpu' if preset == 'gpu' else 'small')
  if task == 'keys_values':
    o = c.data.options
    o.num_pairs = int(length)
    T = o.num_pairs * (o.key_len + o.value_len) + 1 + o.key_len + o.value_len - 1
  else:
    T = int(length)
    if task == 'copy' and preset == 'gpu':
      c.data.options.length = min(64, T // 2)  # the paper's M=64 at long T
  c.data.seq_len = T
  # Sparse targets (one answer late in the sequence): decode to the end; dense ones: a short future.
  c.smt.future = min(T, 16) if task in DENSE_TASKS else T
  if c.smt.num_transitions:
    c.smt.num_transitions = min(T, c.smt.num_transitions if preset != 'gpu' else 256)
  c.smt.num_decoder_samples = min(c.smt.num_decoder_samples, T + 1)
  c.progress_bar = False
  if preset == 'tiny':  # tests/conftest.py's tiny_config sizes
    c.model.d_model = 16
    c.model.num_heads = 2
    c.model.num_mem_tokens = 2
    c.model.enc_depth = c.model.dec_depth = c.model.cell_depth = 1
    c.batch_size = 8
    c.num_eval_batches = 1
    c.evaluate.num_batches = 1
  c.num_steps = int(steps or STEPS[preset][0])
  c.log_every = max(1, min(c.log_every, c.num_steps))
  c.eval_every = c.checkpoint_every = c.num_steps
  return c


def method_configs(task: str, length: int, preset: str, smt_workdir: str, steps: int | None = None,
                   dmt_steps: int | None = None) -> dict:
  """{'smt', 'dmt', 'bptt'} configs: same architecture; BPTT runs SMT + DMT steps."""
  smt = smt_config(task, length, preset, steps)
  n_dmt = int(dmt_steps or (max(1, smt.num_steps // 3) if steps else STEPS[preset][1]))
  dmt = smt_config(task, length, preset, steps)
  Tc, Td, k = dmt_lengths(dmt.data.seq_len)
  lr = 3e-5 if preset == 'gpu' else smt.optim.lr / 3  # published 3e-5; small runs: small_dmt's 1e-3
  variants.dmt(dmt, context=Tc, rollout=Td, every=k, lr=lr, batch_size=smt.batch_size, num_steps=n_dmt)
  dmt.init_from = smt_workdir
  dmt.log_every = max(1, min(dmt.log_every, n_dmt))
  dmt.eval_every = dmt.checkpoint_every = n_dmt
  bptt = smt_config(task, length, preset, steps)
  bptt.method = 'bptt'
  bptt.num_steps = smt.num_steps + n_dmt
  bptt.eval_every = bptt.checkpoint_every = bptt.num_steps
  return {'smt': smt, 'dmt': dmt, 'bptt': bptt}


def _finished_eval(workdir: str, num_steps: int) -> dict | None:
  """workdir/eval.json if it exists and the run there was trained for num_steps."""
  ev, cfg = epath.Path(workdir) / 'eval.json', epath.Path(workdir) / 'config.json'
  if not (ev.exists() and cfg.exists()):
    return None
  try:
    if json.loads(cfg.read_text()).get('num_steps') != num_steps:
      return None
    return json.loads(ev.read_text())
  except (OSError, json.JSONDecodeError):
    return None


def _train_and_score(config, workdir: str) -> tuple[dict, float]:
  """(eval result, training seconds); reuses workdir/eval.json of a finished run."""
  done = _finished_eval(workdir, config.num_steps)
  if done is not None:
    logging.info('%s: finished, reusing eval.json', workdir)
    return done, float('nan')
  t0 = time.perf_counter()
  train.train_and_evaluate(config, workdir)
  seconds = time.perf_counter() - t0
  result = runs.evaluate_workdir(workdir)
  return json.loads(json.dumps(runs.json_safe(result))), seconds


def _num(v) -> float:
  return float('nan') if v is None else float(v)


def run_comparison(task: str, lengths=None, preset: str = 'cpu', out: str = 'workdirs/compare',
                   steps: int | None = None) -> dict:
  """Trains and scores SMT, SMT->DMT and BPTT at every length; writes <out>/compare_<task>.{json,md,png}.

  `steps` overrides the SMT step count (DMT then gets steps // 3, BPTT their sum). Returns the JSON
  object: {'task', 'preset', 'lengths', 'results': {str(length): {method: {...}}}}.
  """
  if preset not in PRESETS:
    raise ConfigError(f'unknown preset {preset!r}; expected one of {", ".join(PRESETS)}')
  lengths = [int(x) for x in (lengths or DEFAULT_LENGTHS[preset][task])]
  results = {}
  for length in lengths:
    base = epath.Path(out) / task / f'T{length}'
    dirs = {m: str(base / m) for m in METHODS}
    configs = method_configs(task, length, preset, dirs['smt'], steps)
    row = {'seq_len': configs['smt'].data.seq_len,
           'dmt': {}, 'smt': {}, 'bptt': {}, 'teacher': {}}
    for m in METHODS:
      logging.info('== %s length %d: %s (%d steps) in %s', task, length, m, configs[m].num_steps, dirs[m])
      ev, seconds = _train_and_score(configs[m], dirs[m])
      row[m] = {'loss': _num(ev.get('rnn_only_loss')), 'accuracy': _num(ev.get('rnn_only_accuracy')),
                'steps': configs[m].num_steps, 'train_seconds': seconds, 'workdir': dirs[m]}
      if m == 'smt':
        row['teacher'] = {'loss': _num(ev.get('teacher_loss')), 'accuracy': _num(ev.get('teacher_accuracy')),
                          'steps': configs[m].num_steps, 'workdir': dirs[m]}
    d = configs['dmt'].dmt
    row['dmt'].update(context=d.context, rollout=d.rollout, every=d.every)
    results[str(length)] = row
  summary = {'task': task, 'preset': preset, 'lengths': lengths, 'title': f'{task} ({preset} preset)',
             'length_is': 'num_pairs' if task == 'keys_values' else 'seq_len', 'results': results}
  out = epath.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  workdir_lib.write_text(out / f'compare_{task}.json', json.dumps(_nan_to_none(summary), indent=2))
  write_table(summary, out / f'compare_{task}.md')
  plotting.comparison(summary, out / f'compare_{task}.png', COLUMNS, METHOD_NAMES)
  return summary


def _nan_to_none(v):
  if isinstance(v, dict):
    return {k: _nan_to_none(x) for k, x in v.items()}
  if isinstance(v, (list, tuple)):
    return [_nan_to_none(x) for x in v]
  if isinstance(v, float) and not math.isfinite(v):
    return None
  return v


def _fmt(v) -> str:
  return 'n/a' if v is None or not math.isfinite(float(v)) else f'{float(v):.3f}'


COLUMNS = ('teacher', 'smt', 'dmt', 'bptt')


def write_table(summary: dict, path: str) -> str:
  """A markdown table, one row per length: accuracy and loss (nats/token, RNN from its initial memory)
  of the teacher, SMT, SMT->DMT and BPTT. Returns the text (also written to `path`)."""
  first = 'pairs' if summary.get('length_is') == 'num_pairs' else 'T'
  head = [first] + (['T'] if first == 'pairs' else [])
  head += [f'{METHOD_NAMES[m]} acc' for m in COLUMNS] + [f'{METHOD_NAMES[m]} loss' for m in COLUMNS]
  lines = [f'# {summary["task"]}: SMT vs SMT→DMT vs BPTT ({summary["preset"]} preset)', '',
           'RNN accuracy / loss (nats per target token) reading whole held-out sequences from its initial '
           'memory; the Transformer teacher (SMT run) is the upper bound.', '',
           '| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for length in summary['lengths']:
    r = summary['results'][str(length)]
    cells = [str(length)] + ([str(r['seq_len'])] if first == 'pairs' else [])
    cells += [_fmt(r[m].get('accuracy')) for m in COLUMNS] + [_fmt(r[m].get('loss')) for m in COLUMNS]
    lines.append('| ' + ' | '.join(cells) + ' |')
  text = '\n'.join(lines) + '\n'
  workdir_lib.write_text(path, text)
  return text
