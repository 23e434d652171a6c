"""SMT vs SMT->DMT vs BPTT on a synthetic task across sequence lengths and seeds (method.md §10).

Everything starts from one ConfigDict (a config file and variant, e.g. configs/retrieval.py:small, with any
overrides): for every length and seed, runs of the same RNN architecture:

- `smt`: the config's SMT run, resized to the length (`at_length`), `config.seed` = seed;
- `dmt`: DMT fine-tuning (`variants.dmt`) initialised from that SMT run;
- `bptt`: the BPTT baseline (`config.method='bptt'`), same cell, as many steps as SMT + DMT together.

Each is scored by `runs.evaluate_workdir`: the RNN reads whole held-out sequences from its initial memory
(`rnn_only_loss` / `rnn_only_accuracy`); the SMT run's Transformer teacher (`teacher_*`) is the upper
bound. With `test_lengths` (multipliers k) every run is also scored on sequences k times longer than it
was trained on (length generalization; `eval_T<kT>.json` in its workdir). Each cell reports the mean over
seeds and a 95% t-interval. Workdirs: `<out>/<task>/T<length>/<method>` for one seed,
`<out>/<task>/T<length>/seed<s>/<method>` for several. Every run trains through `runner.run_jobs`: in this
process, or `lanes` at a time, each in a process pinned to its own core; a finished run is not trained again,
and one whose `eval.json` exists (same steps and seed) is not scored again. Results:
`<out>/compare_<task>.{json,md,png}`.

For keys_values the swept "length" is the number of key/value pairs (the sequence length follows from it,
as in configs/keys_values.py; no length-generalization table); for the other tasks it is `data.seq_len`.
"""

from __future__ import annotations

import json

from absl import logging
from etils import epath

from smtjax import config as config_lib
from smtjax import plotting, runs, variants
from smtjax import workdir as workdir_lib
from smtjax.data import synthetic
from smtjax.errors import ConfigError, SmtjaxError
from smtjax.metrics import trained_seconds
from smtjax.studies import runner, stats
from smtjax.studies.runner import Job

METHODS = ('smt', 'dmt', 'bptt')
METHOD_NAMES = {'teacher': 'Transformer teacher', 'smt': 'SMT', 'dmt': 'SMT→DMT', 'bptt': 'BPTT'}


def at_length(config, length: int, steps: int | None = None, seed: int | None = None):
  """`config` resized to `length` (`synthetic.resize`: T, or keys_values' number of pairs) for an SMT run of
  `steps` steps (default the config's) with seed `seed`: a `smt.future` that decoded to the end of the
  sequence still does, others are capped at T, as are the rollout steps (the sampled transitions and decoded
  memories are at-most counts); one evaluation at the end."""
  c = config.copy_and_resolve_references()
  T0 = c.data.seq_len
  synthetic.resize(c.data, length)
  T = c.data.seq_len
  # Sparse targets (one answer late in the sequence) decode to the end; dense ones keep a short future.
  c.smt.future = T if c.smt.future >= T0 else min(T, c.smt.future)
  c.smt.rollout_steps = min(T, c.smt.rollout_steps)
  c.progress_bar = False
  if seed is not None:
    c.seed = int(seed)
  c.num_steps = int(steps or c.num_steps)
  c.log_every = max(1, min(c.log_every, c.num_steps))
  c.eval_every = c.checkpoint_every = c.num_steps
  return c


def method_configs(config, length: int, smt_workdir: str, steps: int | None = None, dmt_steps: int | None = None,
                   seed: int | None = None) -> dict:
  """{'smt', 'dmt', 'bptt'} configs at `length`: same architecture; DMT `dmt_steps` (default SMT steps // 5)
  at a third of SMT's learning rate (3e-5 at most 1e-4: the published rate for large models); BPTT runs
  SMT + DMT steps."""
  smt = at_length(config, length, steps, seed)
  n_dmt = int(dmt_steps or max(1, smt.num_steps // 5))
  dmt = at_length(config, length, steps, seed)
  Tc, Td, k = variants.dmt_lengths(dmt.data.seq_len)
  lr = smt.optim.lr / 3 if smt.optim.lr > 3e-4 else 3e-5
  variants.dmt(dmt, context=Tc, rollout=Td, every=k, lr=lr, batch_size=smt.batch_size, num_steps=n_dmt)
  dmt.init_from = smt_workdir
  dmt.log_every = max(1, min(dmt.log_every, n_dmt))
  dmt.eval_every = dmt.checkpoint_every = n_dmt
  bptt = at_length(config, length, steps, seed)
  bptt.method = 'bptt'
  bptt.num_steps = smt.num_steps + n_dmt
  bptt.eval_every = bptt.checkpoint_every = bptt.num_steps
  return {'smt': smt, 'dmt': dmt, 'bptt': bptt}


def _finished_eval(workdir: str, config, name: str = 'eval.json') -> dict | None:
  """workdir/<name> if it exists and the run there was trained for config's steps with config's seed."""
  ev = epath.Path(workdir) / name
  if not (ev.exists() and (epath.Path(workdir) / 'config.json').exists()):
    return None
  try:
    saved = config_lib.load_saved(workdir)
    if saved.num_steps != config.num_steps or saved.seed != config.seed:
      return None
    return json.loads(ev.read_text())
  except (OSError, json.JSONDecodeError, SmtjaxError):
    return None


def _scored(config, workdir: str) -> tuple[dict, float]:
  """(eval result, training seconds) of a trained run: one already scored gives its eval.json and NaN seconds,
  any other is scored now, with the seconds its log shows it trained (`trained_seconds`: compilation excluded,
  the same measure whether it trained in this process or in a lane)."""
  done = _finished_eval(workdir, config)
  if done is not None:
    logging.info('%s: finished, reusing eval.json', workdir)
    return done, float('nan')
  return workdir_lib.json_safe(runs.evaluate_workdir(workdir)), trained_seconds(workdir)


def _score_longer(config, workdir: str, seq_len: int) -> dict:
  """workdir's run scored on held-out sequences of length seq_len (reuses its eval_T<seq_len>.json)."""
  done = _finished_eval(workdir, config, runs.eval_filename(config, seq_len))
  if done is not None:
    return done
  return workdir_lib.json_safe(runs.evaluate_workdir(workdir, seq_len=seq_len))


def _num(v) -> float:
  return float('nan') if v is None else float(v)


def _cell(per_seed: list[dict]) -> dict:
  """Mean and 95% interval over seeds of a column's 'accuracy' and 'loss', and the per-seed records."""
  out = {'per_seed': per_seed}
  for key in ('accuracy', 'loss', 'train_seconds'):
    st = stats.mean_ci([r.get(key) for r in per_seed])
    out[key], out[f'{key}_ci'] = st['mean'], st['ci']
  out['num_seeds'] = len(per_seed)
  return out


def _checked_arguments(config, lengths, methods, seeds, test_lengths, lanes):
  """(lengths, methods, test lengths) validated; ConfigError naming the bad argument."""
  task = config.data.name
  methods = tuple(m for m in METHODS if m in methods)
  if not methods or ('dmt' in methods and 'smt' not in methods):
    raise ConfigError(f'methods must be a non-empty subset of {", ".join(METHODS)} (dmt needs smt), got {methods}')
  if int(seeds) < 1:
    raise ConfigError(f'seeds must be >= 1, got {seeds}')
  if int(lanes) < 0:
    raise ConfigError(f'lanes must be >= 0 (0: every run in this process), got {lanes}')
  test_lengths = [int(k) for k in test_lengths or ()]
  if any(k < 2 for k in test_lengths):
    raise ConfigError(f'test_lengths are multipliers of the training length, each >= 2; got {test_lengths}')
  if not synthetic.longer_tests(task):
    test_lengths = []  # e.g. keys_values: its length is a number of pairs; longer sequences only add padding
  if lengths is None:
    lengths = [synthetic.swept_length(config.data)]
  return [int(x) for x in lengths], methods, test_lengths


def _seed_jobs(config, length, seed, base: epath.Path, methods, steps, dmt_steps) -> dict[str, Job]:
  """{method: its run} at one length and seed, in `base`/<method>; DMT starts from the SMT run's checkpoint."""
  dirs = {m: base / m for m in METHODS}
  configs = method_configs(config, length, str(dirs['smt']), steps, dmt_steps, seed)
  return {m: Job(dirs[m], configs[m], after=(dirs['smt'],) if m == 'dmt' else ()) for m in methods}


def _score_seed(jobs: dict[str, Job], seed, test_lengths, per_seed, longer):
  """Scores every method's run of one length and seed, appending each column's record to `per_seed` and its
  length-generalization records to `longer`."""
  for m, job in jobs.items():
    workdir, config = str(job.workdir), job.config
    ev, seconds = _scored(config, workdir)
    for col in ((m, 'teacher') if m == 'smt' else (m,)):
      key = 'rnn_only' if col != 'teacher' else 'teacher'
      per_seed[col].append({'seed': seed, 'loss': _num(ev.get(f'{key}_loss')),
                            'accuracy': _num(ev.get(f'{key}_accuracy')), 'steps': config.num_steps,
                            'train_seconds': seconds if col != 'teacher' else float('nan'), 'workdir': workdir})
      for k in test_lengths:
        T = config.data.seq_len
        lv = _score_longer(config, workdir, k * T)
        longer[col][str(k)].append({'seed': seed, 'seq_len': k * T, 'loss': _num(lv.get(f'{key}_loss')),
                                    'accuracy': _num(lv.get(f'{key}_accuracy'))})


def _row(config, length, columns, methods, per_seed, longer, test_lengths) -> dict:
  """One length's results: each column's mean and interval over seeds (and at k * T)."""
  row = {'seq_len': at_length(config, length).data.seq_len}
  for col in columns:
    row[col] = _cell(per_seed[col])
    row[col]['steps'] = per_seed[col][0]['steps']
  if 'dmt' in methods:
    Tc, Td, k = variants.dmt_lengths(row['seq_len'])
    row['dmt'].update(context=Tc, rollout=Td, every=k)
  if test_lengths:
    row['generalization'] = {col: {kk: _cell(v) for kk, v in longer[col].items()} for col in columns}
  return row


def run_comparison(config, lengths=None, out: str = 'workdirs/compare', steps: int | None = None,
                   dmt_steps: int | None = None, seeds: int = 1, methods=METHODS, test_lengths=(),
                   name: str = '', lanes: int = 0) -> dict:
  """Trains and scores every method at every length for seeds config.seed + 0..seeds-1; writes
  <out>/compare_<task>.{json,md,png}.

  `lengths`: default the config's own length (keys_values: its num_pairs); `steps` overrides the SMT
  step count, `dmt_steps` DMT's (default steps // 5; BPTT their sum); `methods` any of smt, dmt, bptt
  (dmt needs smt); `test_lengths`: multipliers k, each run is also scored at k * T; `lanes`: runs trained
  at once, each in a process pinned to its own core (0: one after another in this process). Returns the JSON
  object: {'task', 'lengths', 'seeds', 'results': {str(length): {column: {'accuracy', 'accuracy_ci',
  'loss', 'loss_ci', 'per_seed', ...}, 'generalization': {column: {str(k): {...}}}}}}.
  """
  task = config.data.name
  lengths, methods, test_lengths = _checked_arguments(config, lengths, methods, seeds, test_lengths, lanes)
  seed_list = [int(config.seed) + i for i in range(int(seeds))]
  jobs = {}
  for length in lengths:
    for seed in seed_list:
      base = epath.Path(out) / task / f'T{length}'
      base = base if seeds == 1 else base / f'seed{seed}'
      jobs[length, seed] = _seed_jobs(config, length, seed, base, methods, steps, dmt_steps)
  flat = [job for per_seed in jobs.values() for job in per_seed.values()]
  for job in flat:  # every config is validated before anything trains (DMT's SMT run does not exist yet)
    config_lib.validate(job.config, init_from_later=True)
  runner.run_jobs(flat, lanes)
  columns = (('teacher',) if 'smt' in methods else ()) + methods
  results = {}
  for length in lengths:
    per_seed = {m: [] for m in columns}
    longer = {m: {str(k): [] for k in test_lengths} for m in columns}
    for seed in seed_list:
      _score_seed(jobs[length, seed], seed, test_lengths, per_seed, longer)
    results[str(length)] = _row(config, length, columns, methods, per_seed, longer, test_lengths)
  summary = {'task': task, 'config': name, 'lengths': lengths, 'seeds': seed_list, 'columns': list(columns),
             'test_lengths': test_lengths,
             'title': f'{name or task} ({len(seed_list)} seed{"s" * (len(seed_list) > 1)})',
             'length_is': synthetic.length_is(task), 'results': results}
  out = epath.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  workdir_lib.write_json(out / f'compare_{task}.json', summary)
  write_table(summary, out / f'compare_{task}.md')
  plotting.comparison(summary, out / f'compare_{task}.png', columns, METHOD_NAMES)
  return summary


def _fmt(cell: dict, key: str) -> str:
  return stats.fmt(cell.get(key), cell.get(f'{key}_ci'))


def write_table(summary: dict, path: str) -> str:
  """Markdown: one row per length with each column's accuracy and loss (nats/token, the RNN from its
  initial memory; mean ± 95% interval over seeds), then the length-generalization table (accuracy at
  k * T). Returns the text (also written to `path`)."""
  columns = summary.get('columns', ['teacher'] + list(METHODS))
  seeds = summary.get('seeds', [0])
  first = 'pairs' if summary.get('length_is') == 'num_pairs' else 'T'
  head = [first] + (['T'] if first == 'pairs' else [])
  head += [f'{METHOD_NAMES[m]} acc' for m in columns] + [f'{METHOD_NAMES[m]} loss' for m in columns]
  lines = [f'# {summary.get("config") or summary["task"]}: SMT vs SMT→DMT vs BPTT', '',
           'RNN accuracy / loss (nats per target token) reading whole held-out sequences from its initial '
           'memory; the Transformer teacher (SMT run) is the upper bound. '
           f'Seeds {", ".join(map(str, seeds))}' + (': mean ± 95% t-interval.' if len(seeds) > 1 else '.'), '']
  rows = []
  for length in summary['lengths']:
    r = summary['results'][str(length)]
    cells = [str(length)] + ([str(r['seq_len'])] if first == 'pairs' else [])
    rows.append(cells + [_fmt(r[m], 'accuracy') for m in columns] + [_fmt(r[m], 'loss') for m in columns])
  lines += stats.table(head, rows)
  ks = summary.get('test_lengths') or []
  if ks:
    head = ['trained at T'] + [f'{METHOD_NAMES[m]} @ {lbl}' for m in columns for lbl in ['T'] + [f'{k}T' for k in ks]]
    lines += ['', '## Length generalization: accuracy on sequences k times longer than training', '']
    rows = []
    for length in summary['lengths']:
      r = summary['results'][str(length)]
      cells = [str(r['seq_len'])]
      for m in columns:
        cells.append(_fmt(r[m], 'accuracy'))
        cells += [_fmt(r['generalization'][m][str(k)], 'accuracy') for k in ks]
      rows.append(cells)
    lines += stats.table(head, rows)
  return stats.write_markdown(path, lines)
