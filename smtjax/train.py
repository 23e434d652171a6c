"""Training: the pure train step, the `Trainer` that compiles it on a mesh, and the loop.

    state, metrics = train_step(state, batch, rng, nets=..., tx=..., schedule=..., config=...)

is a module-level pure function; `Trainer.create` binds it with `functools.partial` and compiles it once
with explicit shardings over the (data, fsdp) mesh and donated state (the evaluation step is
`smtjax.evaluation.eval_step`, bound the same way). The step's randomness is `fold_in(rng, state.step)`,
so a restored run draws the same numbers as an uninterrupted one. `train_and_evaluate` resumes from the
latest checkpoint in `workdir` (state and data stream) and runs the loop: the step on the device, its
host side (NaN check, logging) one step behind, and the periodic actions (log, evaluate, checkpoint,
profile) each on its own schedule.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from absl import logging
from etils import epath
from tqdm import tqdm

from smtjax import checkpoint as ckpt_lib
from smtjax import config as config_lib
from smtjax import optim, perf
from smtjax import sharding as shard_lib
from smtjax import workdir as workdir_lib
from smtjax.data import make_source
from smtjax.data.pipeline import BatchIterator
from smtjax.errors import CheckpointError, ConfigError, DataError, NonFiniteLossError, WorkdirError
from smtjax.evaluation import EvalSpec, Evaluator
from smtjax.metrics import MetricWriter
from smtjax.models import Networks
from smtjax.objectives import objective
from smtjax.preemption import Preempted, StopSignals


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: number of updates applied
  params: Any
  opt_state: Any


# ---------------------------------------------------------------------------------------- pure functions

def train_step(state: TrainState, batch, rng, *, nets: Networks, tx: optax.GradientTransformation,
               schedule: optax.Schedule, config) -> tuple[TrainState, dict]:
  """One update of config.method's objective; `rng` is the run's key (the step's key is folded from
  state.step). Metrics: the objective's, gradient norms (all, teacher, RNN) and the learning rate."""
  step_rng = jax.random.fold_in(rng, state.step)
  loss_fn = objective(config)
  grad_fn = jax.value_and_grad(lambda p: loss_fn(nets, p, batch, step_rng, config), has_aux=True)
  (_, metrics), grads = grad_fn(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  norms = optim.network_norms(grads)
  metrics = dict(metrics, grad_norm=optim.global_norm(grads), grad_norm_teacher=norms['teacher'],
                 grad_norm_rnn=norms['rnn'], lr=schedule(state.step))
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def state_from_params(params, *, tx: optax.GradientTransformation) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def init_params(rng, *, nets: Networks, method: str):
  """Fresh parameters; DMT's readout starts as a copy of the teacher decoder; the plain-Transformer reference
  has its own network only."""
  if method == 'transformer':
    return nets.init_reference(rng)
  params = nets.init(rng)
  if method == 'dmt':
    params['readout'] = jax.tree.map(jnp.copy, params['decoder'])
  return params


def init_state(rng, *, nets: Networks, tx: optax.GradientTransformation, method: str) -> TrainState:
  return state_from_params(init_params(rng, nets=nets, method=method), tx=tx)


# ------------------------------------------------------------------------------------------ the trainer

@dataclasses.dataclass
class Trainer:
  """The compiled functions of one run, bound to a mesh. Build with `Trainer.create(run)` from a resolved
  `config.Run` (`train_and_evaluate`'s), or with `Trainer.from_config(config)` from a config built in code."""
  run: config_lib.Run
  nets: Networks
  mesh: jax.sharding.Mesh
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  state_shardings: Any
  abstract_state: Any  # ShapeDtypeStructs with shardings (checkpoint restores)
  init_state: Callable  # rng -> TrainState
  state_from_params: Callable  # params -> TrainState
  train_step: Callable  # (state, batch, rng) -> (state, metrics)
  evaluator: Evaluator  # (params, source, num_batches) -> metrics

  @property
  def config(self):
    return self.run.config

  @property
  def batch_sharding(self):
    return shard_lib.batch_sharding(self.mesh)

  @classmethod
  def create(cls, run: config_lib.Run, devices=None) -> Trainer:
    """The run's networks, optimizer and compiled functions on its mesh (`run.mesh_shape`) over `devices` (default
    all: as many as the run was resolved for)."""
    config = run.config
    nets = Networks.of(run.model)
    tx, schedule = optim.make_optimizer(config, run.frozen)
    spec = EvalSpec.for_training(run)
    evaluator = Evaluator(run, nets, spec, devices=devices)  # on the run's mesh, which every program shares
    mesh = evaluator.mesh
    init_fn = functools.partial(init_state, nets=nets, tx=tx, method=config.method)
    abstract = jax.eval_shape(init_fn, jax.random.PRNGKey(0))
    state_sh = shard_lib.tree_shardings(mesh, abstract)
    step_fn = functools.partial(train_step, nets=nets, tx=tx, schedule=schedule, config=config)
    return cls(
        run=run, nets=nets, mesh=mesh, tx=tx, schedule=schedule, state_shardings=state_sh,
        abstract_state=ckpt_lib.abstract_with_shardings(abstract, state_sh),
        init_state=jax.jit(init_fn, out_shardings=state_sh),
        state_from_params=jax.jit(functools.partial(state_from_params, tx=tx), in_shardings=(state_sh.params,),
                                  out_shardings=state_sh),
        train_step=jax.jit(step_fn, in_shardings=(state_sh, shard_lib.batch_sharding(mesh), shard_lib.replicated(mesh)),
                           out_shardings=(state_sh, shard_lib.replicated(mesh)), donate_argnums=0),
        evaluator=evaluator,
    )

  @classmethod
  def from_config(cls, config, devices=None) -> Trainer:
    """`create` for a config resolved as it is, e.g. a test's, a benchmark's or a notebook's (`config.resolve`
    also validates a training run's and fills in the data's sizes)."""
    devices = jax.devices() if devices is None else devices
    return cls.create(config_lib.Run.of(config, len(devices)), devices)


# -------------------------------------------------------------------------------------------- the loop

@dataclasses.dataclass(frozen=True)
class Every:
  """A periodic action's schedule: every `n` steps and at the last step."""
  n: int
  last: int

  def __call__(self, step: int) -> bool:
    return step % self.n == 0 or step == self.last


def every_step(step: int) -> bool:
  return True


@dataclasses.dataclass(frozen=True)
class Hook:
  """Periodic work of the loop, on its own schedule. `at` says when and what `fn` gets:

  - 'before': fn(step) before step `step` is dispatched;
  - 'dispatched': fn(step, device_metrics) right after it is dispatched (the device may still be running it);
  - 'metrics': fn(step, host_metrics) once the step's metrics are on the host: one step behind the device,
    in step order, after the NaN check;
  - 'state': fn(step, state) after the step; with `sync`, every earlier step's 'metrics' hooks have run
    first (an evaluation or checkpoint never gets ahead of the written metrics). `on_stop`: also at the step
    where a stop signal ends the run (then it runs whatever `every` says).
  """
  name: str
  every: Callable[[int], bool]
  fn: Callable
  at: str = 'state'
  sync: bool = False
  on_stop: bool = False


def train_and_evaluate(config, workdir, hooks: Sequence[Callable | Hook] = ()) -> dict[str, float]:
  """Trains `config` in `workdir` (a local path or gs://...), resuming from its latest checkpoint;
  returns the last metrics. `hooks`: `Hook`s, or callables hook(step, state) run after every step
  (custom logging, or stopping a run by raising).

  Writes workdir/config.json, workdir/metrics.jsonl (+ TensorBoard events) and Orbax checkpoints under
  workdir/checkpoints/, and with config.profile_steps a jax.profiler trace under workdir/profile/. Logged
  steps carry `tflops_per_s` (FLOPs per step from the program's cost analysis, counted once) and, on a
  device with a known peak (smtjax.perf), `mfu`. Bad config values raise ConfigError before anything is
  compiled or written. Process 0 holds workdir/lock.json while it trains: a workdir another live run
  holds raises WorkdirLockedError.
  """
  workdir = workdir_lib.as_path(workdir)
  stages = config_lib.stages(config, workdir)
  checked = []
  for i, (stage, _) in enumerate(stages):  # every stage checked before any trains
    try:
      checked.append(_checked(stage, init_from_later=i > 0))  # a later stage starts from one still to train
    except (ConfigError, DataError) as e:
      if i or len(stages) == 1:
        raise
      raise ConfigError(f'config.curriculum: its first stage, at length {stage.data.seq_len}: {e}') from None
  for i, ((stage, stage_dir), (run, source)) in enumerate(zip(stages, checked)):
    if i:  # now checked whole: the stage it starts from has trained
      run, source = _checked(stage)
    metrics = _train(run, source, stage_dir, hooks)
  return metrics


def _train(run: config_lib.Run, source, workdir: epath.Path, hooks: Sequence[Callable | Hook]) -> dict[str, float]:
  """Trains a checked run in `workdir`, resuming from its latest checkpoint when that agrees with it."""
  _prepare_workdir(workdir)
  with workdir_lib.lock(workdir, jax.process_index()):
    config_lib.check_compatible(run, workdir)
    return _Run(run, workdir, source, hooks).train()


def _checked(config, init_from_later: bool = False) -> tuple[config_lib.Run, Any]:
  """(the run resolved, its data source), checked before anything is compiled (`init_from_later`: but the run
  it starts from, which an earlier stage trains)."""
  source = make_source(config.data, config.seed)
  run = config_lib.resolve(config, jax.device_count(), source.info.seq_len, source.info.vocab_size)
  config = run.config
  if config.data.seq_len != source.info.seq_len:
    raise ConfigError(f'config.data.seq_len={config.data.seq_len} but the data has {source.info.seq_len}')
  if config.eval_split != 'test':
    try:
      source.get_batch(config.eval_split, 0, 0, 1)
    except DataError as e:
      raise ConfigError(f'config.eval_split={config.eval_split!r}: {e}') from e
  if config.init_from and not init_from_later:
    init_from = epath.Path(config.init_from)
    if not init_from.is_dir():
      raise ConfigError(f'config.init_from: {config.init_from!r} is not a directory')
    if not (init_from / 'config.json').exists() or not (init_from / 'checkpoints').is_dir():
      raise CheckpointError(f'config.init_from: {config.init_from} holds no trained run '
                            '(no config.json and checkpoint)')
    config_lib.check_compatible(run, config.init_from, what='initialise from')
  return run, source


def _prepare_workdir(workdir: epath.Path):
  """Creates `workdir` and checks that it can be written, before anything is compiled (WorkdirError)."""
  if workdir.exists() and not workdir.is_dir():
    raise WorkdirError(f'workdir {workdir} is a file, not a directory; give a directory (--workdir=DIR)')
  try:
    workdir.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise WorkdirError(f'cannot create the workdir {workdir}: {e}') from e
  if jax.process_index() == 0:  # a read-only or full file system fails here rather than after compiling
    probe = workdir / f'.write-test-{os.getpid()}'
    workdir_lib.write_text(probe, 'smtjax')
    probe.unlink()


class _Run:
  """The host side of one training run: what it opens (checkpointer, data iterator, metric writer,
  progress bar, signal handlers, profiler), what it keeps between steps, and its periodic work as hooks
  (progress, logging, evaluation, checkpoints, profiling, the caller's). `train` runs the loop; `_close` is
  the one place where a run shuts down, after an error or not."""

  def __init__(self, run: config_lib.Run, workdir: epath.Path, source, hooks: Sequence[Callable | Hook]):
    config = self.config = run.config
    self.workdir, self.source = workdir, source
    self.trainer = Trainer.create(run)
    self.checkpointer = ckpt_lib.Checkpointer(workdir, config.max_checkpoints_to_keep)
    self.train_it = BatchIterator(source, 'train', config.batch_size, jax.process_index(), jax.process_count())
    n = config.num_steps
    self.evaluates = Every(config.eval_every, n)
    profile = run.profile
    self.hooks = (
        Hook('progress', every_step, self._progress, at='metrics'),
        Hook('log', Every(config.log_every, n), self._log, at='metrics'),
        Hook('evaluate', self.evaluates, self._evaluate, sync=True),
        Hook('checkpoint', Every(config.checkpoint_every, n), self._save, sync=True, on_stop=True),
        *(() if profile is None else (Hook('profile start', profile[0].__eq__, self._start_trace, at='before'),
                                      Hook('profile stop', (profile[1] - 1).__eq__, self._stop_trace,
                                           at='dispatched'))),
        *(h if isinstance(h, Hook) else Hook(getattr(h, '__name__', 'hook'), every_step, h) for h in hooks),
    )
    self.last: dict[str, float] = {}  # the newest value of every metric (returned)
    self.stash: dict[str, float] = {}  # train metrics of an evaluation step, written with its eval metrics
    self.flops_per_step = 0.0  # of the whole (global) step, from its compilation
    self.tracing = False
    self.timer = (time.perf_counter(), 0)  # (time of the last logged step, steps since)
    self.writer = self.bar = self.signals = None

  def train(self) -> dict[str, float]:
    try:
      start, state = self._restore_or_init()
      workdir_lib.save_config(self.config, self.workdir, jax.process_index())
      devices = jax.devices()
      workdir_lib.record_environment(self.workdir, {
          'start_step': int(start), 'jax': jax.__version__, 'platform': devices[0].platform,
          'device_kind': devices[0].device_kind, 'num_devices': len(devices), 'num_processes': jax.process_count(),
          'time': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, jax.process_index())
      self.writer = MetricWriter(self.workdir, enabled=jax.process_index() == 0, resume_step=start,
                                 flush_every_s=float(self.config.metrics_flush_secs))
      self.bar = _progress(self.config, start)
      self.signals = StopSignals(agree_every=self.config.log_every).install()
      stopped = self._loop(start, state)
    except BaseException:
      self._close(error=True)
      raise
    self._close(error=False)
    if stopped is not None:
      raise Preempted(stopped[0], stopped[1], self.workdir)
    return self.last

  def _restore_or_init(self) -> tuple[int, TrainState]:
    tr, config = self.trainer, self.config
    restored = self.checkpointer.restore_latest(tr.abstract_state)  # falls back past damaged checkpoints
    if restored is not None:
      start, state, data_state = restored
      self.train_it.set_state(data_state)
      logging.info('Resumed from %s at step %d.', self.checkpointer.directory, start)
      return start, state
    if config.init_from:
      logging.info('Initialised parameters from %s.', config.init_from)
      return 0, tr.state_from_params(initial_params(tr))
    return 0, tr.init_state(jax.random.PRNGKey(config.seed))

  def _run_hooks(self, at: str, step: int, *args, stop: bool = False):
    for h in self.hooks:
      if h.at == at and (h.every(step) or (stop and h.on_stop)):
        h.fn(step, *args)

  def _loop(self, start: int, state: TrainState):
    """Steps start+1..num_steps; returns (step, signal name) when a signal stopped the run, else None."""
    rng = jax.random.PRNGKey(self.config.seed)
    step_fn, pending = None, None  # pending: (step, device metrics) of the step dispatched before this one
    for step in range(start + 1, self.config.num_steps + 1):
      self._run_hooks('before', step)
      with jax.profiler.StepTraceAnnotation('train', step_num=step):
        batch = shard_lib.global_batch(next(self.train_it), self.trainer.batch_sharding)
        if step_fn is None:
          step_fn, self.flops_per_step = _compile_step(self.trainer, state, batch, rng)
        state, metrics = step_fn(state, batch, rng)
      self._run_hooks('dispatched', step, metrics)
      if pending is not None:
        self._finish_step(*pending)
      pending = (step, metrics)
      stop = self.signals.should_stop(step) and step != self.config.num_steps  # preemption or Ctrl-C: save, stop
      due = [h for h in self.hooks if h.at == 'state' and (h.every(step) or (stop and h.on_stop))]
      if pending is not None and any(h.sync for h in due):
        self._finish_step(*pending)
        pending = None
      for h in due:
        h.fn(step, state)
      if stop:
        return step, self.signals.received
    if pending is not None:
      self._finish_step(*pending)
    return None

  def _finish_step(self, step: int, metrics):
    """Host side of a step, one step behind the device: the NaN check, then the 'metrics' hooks."""
    metrics = jax.device_get(metrics)
    loss, grad_norm = float(metrics['loss']), float(metrics['grad_norm'])
    # The loss is computed before the update; a finite gradient norm shows the update kept params finite.
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
      saved = self.checkpointer.latest_step()
      kept = (f'the last good checkpoint (step {saved}) in {self.checkpointer.directory} is kept and the next run '
              'resumes from it') if saved is not None else (
              'nothing was saved yet: the next run starts again from step 0 (lower optim.lr, or set '
              'checkpoint_every below this step)')
      raise NonFiniteLossError(
          f'non-finite training loss ({loss}) or gradient norm ({grad_norm}) at step {step}; {kept}')
    self._run_hooks('metrics', step, metrics)

  # ---------------------------------------------------------------------------------------------- hooks

  def _progress(self, step: int, metrics):
    t_last, steps = self.timer
    self.timer = (t_last, steps + 1)
    if self.bar is not None:
      self.bar.update(1)

  def _log(self, step: int, metrics):
    """A metrics record: the step's metrics, steps/s since the last one and throughput. An evaluation step's
    record waits for its evaluation and is written with it."""
    now, (t_last, steps) = time.perf_counter(), self.timer
    record = {k: float(v) for k, v in metrics.items()}
    record['steps_per_s'] = steps / max(now - t_last, 1e-9)
    self.timer = (now, 0)
    if self.flops_per_step:
      record.update(perf.throughput(self.flops_per_step, record['steps_per_s'], jax.device_count()))
    self.last.update(record)
    if self.evaluates(step):
      self.stash.update(record)
    else:
      self.writer.write(step, record)
    if self.bar is not None:
      self.bar.set_postfix(loss=f'{record["loss"]:.4f}', steps_per_s=f'{record["steps_per_s"]:.2f}')

  def _evaluate(self, step: int, state: TrainState):
    metrics = self.trainer.evaluator(state.params, self.source, self.config.num_eval_batches, self.config.eval_split)
    self.writer.write(step, {**self.stash, **metrics})
    self.writer.flush()
    self.stash.clear()
    self.last.update(metrics)
    if self.bar is not None:
      self.bar.write(f'step {step}: ' + ', '.join(f'{k}={v:.4f}' for k, v in sorted(metrics.items())))

  def _save(self, step: int, state: TrainState):
    self.writer.flush()  # before the checkpoint: metrics.jsonl holds every record up to the newest one
    self.checkpointer.save(step, state, self.train_it.get_state())

  def _start_trace(self, step: int):
    """jax.profiler trace of steps profile[0]..profile[1]-1 (config.profile_steps)."""
    jax.profiler.start_trace(str(self.workdir / 'profile'))
    self.tracing = True

  def _stop_trace(self, step: int | None = None, metrics=None):
    if self.tracing:
      jax.block_until_ready(metrics)
      jax.profiler.stop_trace()
      self.tracing = False

  def _close(self, error: bool):
    """Shuts the run down: signal handlers, profiler, checkpointer (waits for the last save), metric
    writer, progress bar. After an error every close runs and its own failure is only logged, so the first
    error is the one reported and what is saved stays saved."""
    closes = [self.signals.uninstall if self.signals else None, self._stop_trace, self.checkpointer.close,
              self.writer.close if self.writer else None, self.bar.close if self.bar else None]
    for close in filter(None, closes):
      if not error:
        close()
        continue
      try:
        close()
      except Exception as e:  # noqa: BLE001
        logging.warning('while stopping after an error: %s', e)


def _progress(config, start: int):
  if not config.progress_bar or jax.process_index() != 0:
    return None
  return tqdm(total=config.num_steps, initial=start, dynamic_ncols=True, desc='train')


def _compile_step(trainer: Trainer, state, batch, rng):
  """(train step, FLOPs of one step on all devices): the step compiled once for these arguments, and its FLOP
  count from the same trace and lowering (0 when unavailable)."""
  compiled, flops = perf.compile_with_flops(trainer.train_step, state, batch, rng)
  return compiled, flops['flops'] if flops else 0.0


# ------------------------------------------------------------------------------------- trained parameters

def initial_params(trainer: Trainer):
  """Parameters of the run's init_from (its latest checkpoint), fitted to the trainer's parameter tree: groups this
  run lacks are dropped, and DMT's readout starts as the source's readout (if it was fine-tuned) or its
  decoder. Placed with the trainer's shardings."""
  init_from = trainer.config.init_from
  _, src = load_params(init_from)
  want = trainer.abstract_state.params
  params = {}
  for k in want:
    if k in src:
      params[k] = src[k]
    elif k == 'readout':
      params[k] = src['decoder']
    else:
      raise CheckpointError(f'{init_from} has no parameters {k!r} that this run needs')
  try:
    return jax.tree.map(lambda a, w: jax.device_put(a, w.sharding), params, want)
  except ValueError as e:
    raise CheckpointError(f'the parameters in {init_from} do not fit this config: {e}') from e


def load_params(workdir, config=None, step: int | None = None):
  """(config, params) of a trained run (latest checkpoint unless `step`), e.g. for notebooks: the parameters
  alone, placed on the run's mesh (no optimizer is built and its state is not read). The saved config is
  upgraded to the current fields (`config.load_saved`)."""
  config = config_lib.load_saved(workdir) if config is None else config
  run = config_lib.Run.of(config, jax.device_count())
  abstract = jax.eval_shape(functools.partial(init_params, nets=Networks.of(run.model), method=config.method),
                            jax.random.PRNGKey(0))
  shardings = shard_lib.tree_shardings(shard_lib.make_mesh(run.mesh_shape), abstract)
  want = {'params': ckpt_lib.abstract_with_shardings(abstract, shardings)}  # a part of the saved TrainState
  checkpointer = ckpt_lib.Checkpointer(workdir, config.max_checkpoints_to_keep)
  try:
    if checkpointer.latest_step() is None:
      raise CheckpointError(f'no checkpoint in {checkpointer.directory}')
    if step is None:  # the newest that restores (a damaged newer one is logged, and left for training to set aside)
      _, restored, _ = checkpointer.restore_latest(want, set_aside=False)
    else:
      restored, _ = checkpointer.restore(want, step)
  finally:
    checkpointer.close()
  return config, restored['params']
