"""Kill-and-resume soak: start a training run N times, SIGKILL it at a random moment (in start-up, mid-training,
or while a checkpoint is being written) and start it again; at the end its parameters and every logged metric
must equal an uninterrupted run's, with no duplicate or missing metric step (the command: experiments/soak.py).

The runs are `python -m experiments.run` processes started in the repository's root, so the soak needs a
checkout, not just the installed package.
"""

from __future__ import annotations

import atexit
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from smtjax import metrics as metrics_lib
from smtjax import train
from smtjax import workdir as workdir_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]  # the checkout, where the runs start
# A model small enough that a step takes milliseconds: a launch is mostly start-up, and kills land
# anywhere in a run of many steps and checkpoints.
TINY = ['--config.data.seq_len=8', '--config.smt.future=8', '--config.model.d_model=16', '--config.model.num_heads=2',
        '--config.model.enc_depth=1', '--config.model.dec_depth=1', '--config.model.cell_depth=1',
        '--config.batch_size=8', '--config.num_eval_batches=1', '--config.progress_bar=False', '--config.log_every=1',
        '--config.metrics_flush_secs=0']
MODES = ('save', 'step', 'startup')
TMP_SUFFIX = '.orbax-checkpoint-tmp'  # Orbax writes a checkpoint here, then renames it to <step>


def _last_step(workdir: pathlib.Path) -> int:
  """The step of the last complete line of metrics.jsonl (0 if none)."""
  try:
    data = (workdir / 'metrics.jsonl').read_bytes()
  except FileNotFoundError:
    return 0
  lines = data[:data.rfind(b'\n') + 1].splitlines()
  return json.loads(lines[-1])['step'] if lines else 0


def _saves_in_progress(workdir: pathlib.Path, old: frozenset[str] = frozenset()) -> set[str]:
  """Unfinished checkpoint directories, but those in `old` (left by an earlier launch)."""
  try:
    return {n for n in os.listdir(workdir / 'checkpoints') if TMP_SUFFIX in n} - old
  except FileNotFoundError:
    return set()


def _launch(cmd: list[str], log: pathlib.Path) -> subprocess.Popen:
  with open(log, 'w') as f:  # the child keeps its own copy of the descriptor
    return subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, text=True)


def soak(out: str, kills: int = 10, seed: int = 0, num_steps: int = 0, checkpoint_every: int = 3,
         eval_every: int = 10, config: str = 'configs/retrieval.py:small', overrides: tuple[str, ...] = (),
         verbose: bool = True) -> dict:
  """Runs the soak; returns a summary dict (`identical` is the verdict). `num_steps` 0: 8*kills + 20."""
  say = print if verbose else (lambda *a, **k: None)
  rng = np.random.default_rng(seed)
  out_dir = pathlib.Path(out)
  shutil.rmtree(out_dir, ignore_errors=True)
  out_dir.mkdir(parents=True)
  num_steps = num_steps or 8 * kills + 20
  base = [sys.executable, '-m', 'experiments.run', f'--config={config}', *TINY, f'--config.num_steps={num_steps}',
          f'--config.checkpoint_every={checkpoint_every}', f'--config.eval_every={eval_every}', *overrides]
  ref, run = out_dir / 'reference', out_dir / 'run'
  t0 = time.time()
  startup_s = _reference_run([*base, f'--workdir={ref}'], ref, out_dir / 'reference.log')
  say(f'uninterrupted run: {num_steps} steps in {time.time() - t0:.1f} s (first step logged after {startup_s:.1f} s)')

  # Each block of three kills has every mode once, in random order.
  modes = [m for _ in range(-(-kills // len(MODES))) for m in rng.permutation(MODES)][:kills]
  log = []
  for i, mode in enumerate(modes):
    entry = _launch_and_kill([*base, f'--workdir={run}'], run, out_dir / f'launch-{i}.log', mode, rng, startup_s,
                             num_steps, checkpoint_every)
    if entry is None:
      say(f'kill {i}: the run finished by itself before the kill; see launch-{i}.log')
      break
    log.append(dict(kill=i, mode=mode, **entry))
    say(f'kill {i}: {mode:8s} after {entry["after_s"]:5.2f} s, resumed from step {entry["resumed_from"]}, '
        f'last logged step {entry["last_logged_step"]}' + (', during a checkpoint save' if entry['during_save']
                                                           else ''))

  p = _launch([*base, f'--workdir={run}'], out_dir / 'final.log')
  if p.wait() != 0:
    raise RuntimeError(f'the final resume failed; see {out_dir / "final.log"}')
  summary = dict(kills=len(log), num_steps=num_steps, checkpoint_every=checkpoint_every, seed=seed,
                 during_save=sum(e['during_save'] for e in log),
                 by_mode={m: sum(e['mode'] == m for e in log) for m in MODES}, **_compare(ref, run),
                 wall_s=round(time.time() - t0, 1), log=log)
  workdir_lib.write_json(out_dir / 'soak.json', summary)
  say(f'soak: {summary["kills"]} kills ({summary["during_save"]} during a checkpoint save; by mode '
      f'{summary["by_mode"]}), {summary["metric_records"]} metric records, steps without duplicates or gaps: '
      f'{summary["steps_ok"]}, metrics equal: {summary["metrics_equal"]}, parameters equal: '
      f'{summary["params_equal"]}, checkpoints set aside: {len(summary["set_aside"])}; '
      f'{summary["wall_s"]} s -> {"IDENTICAL" if summary["identical"] else "DIFFERENT"}')
  return summary


def _reference_run(cmd: list[str], workdir: pathlib.Path, log: pathlib.Path) -> float:
  """Trains the uninterrupted run; returns the seconds until its first step was logged (its start-up)."""
  t0 = time.time()
  p = _launch(cmd, log)
  first_step_s = None
  while p.poll() is None:
    if first_step_s is None and _last_step(workdir) > 0:
      first_step_s = time.time() - t0
    time.sleep(0.005)
  if p.returncode != 0:
    raise RuntimeError(f'the uninterrupted run failed; see {log}')
  return first_step_s or (time.time() - t0)


def _launch_and_kill(cmd: list[str], run: pathlib.Path, log: pathlib.Path, mode: str, rng, startup_s: float,
                     num_steps: int, checkpoint_every: int) -> dict | None:
  """Starts the run, SIGKILLs it at a moment of `mode` and returns what the kill met (None: the run finished by
  itself first)."""
  resumed_from = max([int(n) for n in os.listdir(run / 'checkpoints') if n.isdigit()], default=0) \
      if (run / 'checkpoints').is_dir() else 0
  logged_before = _last_step(run)  # metrics.jsonl still holds what earlier launches logged
  old_saves = frozenset(_saves_in_progress(run))  # unfinished saves of earlier launches
  start = time.time()
  p = _launch(cmd, log)
  atexit.register(lambda p=p: p.poll() is None and p.kill())  # never leave a run behind
  if mode == 'startup':  # anywhere from interpreter start to the first steps (compiling, restoring)
    deadline = start + rng.uniform(0, startup_s)
    while time.time() < deadline and p.poll() is None and _last_step(run) <= logged_before:
      time.sleep(0.002)
  elif mode == 'step':  # mid-training: a random number of steps past what earlier launches logged
    target = min(num_steps - 1, max(resumed_from, logged_before) + int(rng.integers(1, 2 * checkpoint_every + 1)))
    while _last_step(run) < target and p.poll() is None:
      time.sleep(0.002)
  else:  # while the next checkpoint is being written: its unfinished directory is there
    # The record of a checkpoint step is written right before its asynchronous save starts: from then on
    # wait for the save's directory at most 0.5 s, and never past the step before the next checkpoint, so a
    # save too quick to be seen cannot let a fast run train to its end before the kill.
    logged_at = saved_step = None
    while p.poll() is None and not _saves_in_progress(run, old_saves):
      last = _last_step(run)
      if logged_at is None:
        if last > max(resumed_from, logged_before) and last % checkpoint_every == 0:
          logged_at, saved_step = time.time(), last
      elif time.time() - logged_at > 0.5 or last >= saved_step + max(1, checkpoint_every - 1):
        break
      time.sleep(0.001)
  if p.poll() is not None:
    if p.returncode != 0:
      raise RuntimeError(f'a launch failed; see {log}')
    return None
  p.send_signal(signal.SIGKILL)
  p.wait()
  return dict(after_s=round(time.time() - start, 2), resumed_from=resumed_from, last_logged_step=_last_step(run),
              during_save=bool(_saves_in_progress(run, old_saves)))


def _compare(ref: pathlib.Path, run: pathlib.Path) -> dict:
  """Whether the killed run's metrics (without timings), steps and parameters equal the uninterrupted run's."""
  a, b = (metrics_lib.without_timings(metrics_lib.read_metrics(str(d))) for d in (ref, run))
  steps = [r['step'] for r in b]
  steps_ok = steps == sorted(set(steps)) and steps == [r['step'] for r in a]
  _, pa = train.load_params(str(ref))
  _, pb = train.load_params(str(run))
  params_equal = all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(np.array_equal(x, y)), pa, pb)))
  return dict(metric_records=len(b), steps_ok=steps_ok, metrics_equal=a == b, params_equal=params_equal,
              set_aside=sorted(n for n in os.listdir(run / 'checkpoints') if '.corrupt-' in n),
              identical=bool(steps_ok and a == b and params_equal))
