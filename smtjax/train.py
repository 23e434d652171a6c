"""Training: state, optimizer, the sharded jitted train step, evaluation and `train_and_evaluate`.

    state, metrics = train_step(state, batch, rng)

is one `jax.jit` function with explicit shardings over the (data, fsdp) mesh and donated state. The
step's randomness is `fold_in(rng, state.step)`, so a restored run draws the same numbers as an
uninterrupted one. The loop resumes from the latest checkpoint in `workdir` (state and data stream).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from typing import Any

import chex
import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax
from absl import logging
from etils import epath
from tqdm import tqdm

from smtjax import bptt, dmt, perf, smt
from smtjax import checkpoint as ckpt_lib
from smtjax import config as config_lib
from smtjax import sharding as shard_lib
from smtjax import workdir as workdir_lib
from smtjax.data import make_source
from smtjax.data.pipeline import BatchIterator
from smtjax.errors import CheckpointError, ConfigError, NonFiniteLossError, WorkdirError  # noqa: F401
from smtjax.metrics import MetricWriter
from smtjax.models import Networks
from smtjax.preemption import Preempted, StopSignals


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: number of updates applied
  params: Any
  opt_state: Any


# ----------------------------------------------------------------------------------------- optimizer

def learning_rate_schedule(o, num_steps: int) -> optax.Schedule:
  """Linear warm-up over warmup_frac*num_steps, then constant or cosine decay to 0 (method.md §8)."""
  warmup = int(round(o.warmup_frac * num_steps))
  if o.schedule == 'cosine':
    return optax.warmup_cosine_decay_schedule(0.0, o.lr, warmup, max(num_steps, warmup + 1), end_value=0.0)
  if warmup == 0:
    return optax.constant_schedule(o.lr)
  return optax.join_schedules([optax.linear_schedule(0.0, o.lr, warmup), optax.constant_schedule(o.lr)], [warmup])


def frozen_networks(config) -> tuple[str, ...]:
  """Top-level parameter groups that get no update: by config.smt.trainable for SMT; the teacher in DMT;
  the (unused) encoder in BPTT unless it provides the initial memory."""
  if config.method == 'dmt':
    return ('encoder', 'decoder')
  if config.method == 'bptt':
    return () if config_lib.initial_memory(config) == 'encoder' else ('encoder',)
  return {'all': (), 'teacher': ('cell', 'init_memory'), 'rnn': ('encoder', 'decoder')}[config.smt.trainable]


# The two networks of SMT as top-level parameter groups (per-network gradient clipping and norms).
NETWORKS = {'teacher': ('encoder', 'decoder'), 'rnn': ('cell', 'readout', 'init_memory')}


def _network_norms(tree) -> dict:
  """{'teacher': norm, 'rnn': norm}: global norms of each network's part of a parameter-shaped tree."""
  return {net: _global_norm([tree[k] for k in keys if k in tree]) for net, keys in NETWORKS.items()}


def clip_by_network_norm(max_norm: float) -> optax.GradientTransformation:
  """Scales the teacher's and the RNN's updates separately to a global norm of at most `max_norm` each
  (the public code's two clip_grad_norm_ calls). Top-level groups outside NETWORKS are left as they are."""
  def update_fn(updates, state, params=None):
    del params
    norms = _network_norms(updates)
    out = dict(updates)
    for net, keys in NETWORKS.items():
      scale = jnp.where(norms[net] < max_norm, 1.0, max_norm / jnp.maximum(norms[net], 1e-30))
      for k in keys:
        if k in out:
          out[k] = jax.tree.map(lambda g, scale=scale: (g * scale).astype(g.dtype), out[k])
    return out, state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def _trainable_labels(params, frozen: tuple[str, ...]):
  return {k: jax.tree.map(lambda _, k=k: 'freeze' if k in frozen else 'train', v) for k, v in params.items()}


def make_optimizer(config) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """AdamW (weight decay on matrices only) after gradient clipping (optim.clip_mode: one global norm, or the
  teacher and the RNN each to optim.grad_clip); frozen networks get no update."""
  o = config.optim
  schedule = learning_rate_schedule(o, config.num_steps)
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
  tx = optax.adamw(schedule, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay, mask=decay_mask)
  if o.grad_clip > 0:
    per_network = o.get('clip_mode', 'global') == 'per_network'
    clip = clip_by_network_norm(o.grad_clip) if per_network else optax.clip_by_global_norm(o.grad_clip)
    tx = optax.chain(clip, tx)
  frozen = frozen_networks(config)
  if frozen:
    tx = optax.multi_transform({'train': tx, 'freeze': optax.set_to_zero()}, lambda p: _trainable_labels(p, frozen))
  return tx, schedule


def objective(config) -> Callable:
  """The training loss of config.method: (nets, params, batch, rng) -> (total, metrics)."""
  if config.method == 'dmt':
    return lambda nets, p, b, r: dmt.dmt_losses(nets, p, b, r, config)
  if config.method == 'bptt':
    return lambda nets, p, b, r: bptt.bptt_losses(nets, p, b, r, config)
  return lambda nets, p, b, r: smt.smt_losses(nets, p, b, r, config.smt)


def _global_norm(tree):
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


# -------------------------------------------------------------------------------------- the trainer

@dataclasses.dataclass
class Trainer:
  """The compiled functions of one run, bound to a mesh. Build with `Trainer.create(config)`."""
  config: Any
  nets: Networks
  mesh: jax.sharding.Mesh
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  state_shardings: Any
  abstract_state: Any
  init_state: Callable
  state_from_params: Callable
  train_step: Callable
  eval_step: Callable

  @property
  def batch_sharding(self):
    return shard_lib.batch_sharding(self.mesh)

  @classmethod
  def create(cls, config, devices=None, max_traces: int | None = None) -> Trainer:
    """Builds the compiled functions on a mesh over `devices` (default all). `max_traces` makes the train
    step raise if it is traced (so compiled) more often than that (chex.assert_max_traces)."""
    nets = Networks.from_config(config.model, config_lib.initial_memory(config))
    mesh = shard_lib.make_mesh(config, devices)
    tx, schedule = make_optimizer(config)
    loss_fn = objective(config)
    teacher_causal = config.model.encoder_attention == 'causal' and config.method != 'bptt'

    def from_params(params):
      return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

    def init_fn(rng):
      params = nets.init(rng)
      if config.method == 'dmt':  # the readout DMT fine-tunes starts as the teacher decoder
        params['readout'] = jax.tree.map(jnp.copy, params['decoder'])
      return from_params(params)

    abstract = jax.eval_shape(init_fn, jax.random.PRNGKey(0))
    state_sh = shard_lib.tree_shardings(mesh, abstract)
    repl = shard_lib.replicated(mesh)
    batch_sh = shard_lib.batch_sharding(mesh)

    def train_step(state: TrainState, batch, rng):
      """One SMT update; rng is the run's key (the step's key is folded from state.step)."""
      step_rng = jax.random.fold_in(rng, state.step)
      grad_fn = jax.value_and_grad(lambda p: loss_fn(nets, p, batch, step_rng), has_aux=True)
      (_, metrics), grads = grad_fn(state.params)
      updates, opt_state = tx.update(grads, state.opt_state, state.params)
      params = optax.apply_updates(state.params, updates)
      norms = _network_norms(grads)
      metrics = dict(metrics, grad_norm=_global_norm(grads), grad_norm_teacher=norms['teacher'],
                     grad_norm_rnn=norms['rnn'], lr=schedule(state.step))
      return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    def eval_step(params, batch, rng):
      """The method's losses (suffix _test) and RNN/teacher sequence metrics on a held-out batch."""
      _, metrics = loss_fn(nets, params, batch, rng)
      metrics = {f'{k}_test': v for k, v in metrics.items()}
      metrics.update(smt.rnn_metrics(nets, params, batch, teacher_causal))
      return metrics

    return cls(
        config=config, nets=nets, mesh=mesh, tx=tx, schedule=schedule, state_shardings=state_sh,
        abstract_state=ckpt_lib.abstract_with_shardings(abstract, state_sh),
        init_state=jax.jit(init_fn, out_shardings=state_sh),
        state_from_params=jax.jit(from_params, in_shardings=(state_sh.params,), out_shardings=state_sh),
        train_step=jax.jit(train_step if max_traces is None else chex.assert_max_traces(train_step, n=max_traces),
                           in_shardings=(state_sh, batch_sh, repl), out_shardings=(state_sh, repl),
                           donate_argnums=0),
        eval_step=jax.jit(eval_step, in_shardings=(state_sh.params, batch_sh, repl), out_shardings=repl),
    )

  def evaluate(self, params, source, num_batches: int) -> dict[str, float]:
    """Mean of eval_step over held-out batches 0..num_batches-1 of the 'test' split."""
    it = BatchIterator(source, 'test', self.config.batch_size, jax.process_index(), jax.process_count(), prefetch=0)
    rng = jax.random.PRNGKey(self.config.seed + 1)
    totals: dict[str, float] = {}
    for i in range(num_batches):
      m = jax.device_get(self.eval_step(params, shard_lib.global_batch(next(it), self.batch_sharding),
                                        jax.random.fold_in(rng, i)))
      for k, v in m.items():
        totals[k] = totals.get(k, 0.0) + float(v) / num_batches
    return totals


# ------------------------------------------------------------------------------------------ the loop

def _save_config(config, workdir: epath.Path):
  if jax.process_index() == 0:
    workdir_lib.write_text(workdir / 'config.json', config.to_json_best_effort(indent=2, sort_keys=True))


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


def _progress(config, start: int):
  if not config.progress_bar or jax.process_index() != 0:
    return None
  return tqdm(total=config.num_steps, initial=start, dynamic_ncols=True, desc='train')


def train_and_evaluate(config, workdir) -> dict[str, float]:
  """Trains `config` in `workdir` (a local path or gs://...), resuming from its latest checkpoint;
  returns the last metrics.

  Writes workdir/config.json, workdir/metrics.jsonl (+ TensorBoard events) and Orbax checkpoints under
  workdir/checkpoints/, and with config.profile_steps a jax.profiler trace under workdir/profile/. Logged
  steps carry `tflops_per_s` (FLOPs per step from the program's cost analysis, counted once) and, on a
  device with a known peak (smtjax.perf), `mfu`. Bad config values raise ConfigError before anything is
  compiled or written. Process 0 holds workdir/lock.json while it trains: a workdir another live run
  holds raises WorkdirLockedError.
  """
  source = make_source(config.data, config.seed)
  config = config_lib.infer_from_data(config, source.info.seq_len, source.info.vocab_size)
  config_lib.validate(config, num_devices=jax.device_count(), data_vocab_size=source.info.vocab_size)
  if config.data.seq_len != source.info.seq_len:
    raise config_lib.ConfigError(f'config.data.seq_len={config.data.seq_len} but the data has {source.info.seq_len}')
  if config.init_from:
    init_from = epath.Path(config.init_from)
    if not init_from.is_dir():
      raise config_lib.ConfigError(f'config.init_from: {config.init_from!r} is not a directory')
    if not (init_from / 'config.json').exists() or not (init_from / 'checkpoints').is_dir():
      raise ckpt_lib.CheckpointError(f'config.init_from: {config.init_from} holds no trained run '
                                     '(no config.json and checkpoint)')
    ckpt_lib.check_compatible(config, config.init_from, what='initialise from')
  workdir = workdir_lib.as_path(workdir)
  _prepare_workdir(workdir)
  with workdir_lib.lock(workdir, jax.process_index()):
    ckpt_lib.check_compatible(config, workdir)
    return _train(config, workdir, source)


def _train(config, workdir: epath.Path, source) -> dict[str, float]:
  trainer = Trainer.create(config)
  checkpointer = ckpt_lib.Checkpointer(workdir, config.max_checkpoints_to_keep)
  train_it = BatchIterator(source, 'train', config.batch_size, jax.process_index(), jax.process_count())
  restored = checkpointer.restore_latest(trainer.abstract_state)  # falls back past damaged checkpoints
  if restored is None:
    start = 0
    if config.init_from:
      state = trainer.state_from_params(initial_params(config, trainer))
      logging.info('Initialised parameters from %s.', config.init_from)
    else:
      state = trainer.init_state(jax.random.PRNGKey(config.seed))
  else:
    start, state, data_state = restored
    train_it.set_state(data_state)
    logging.info('Resumed from %s at step %d.', checkpointer.directory, start)
  _save_config(config, workdir)
  writer = MetricWriter(workdir, enabled=jax.process_index() == 0, resume_step=start,
                        flush_every_s=float(config.get('metrics_flush_secs', 30.0)))
  rng = jax.random.PRNGKey(config.seed)
  bar = _progress(config, start)
  last: dict[str, float] = {}
  pending = None  # (step, device metrics) of the step dispatched before the current one
  stash: dict[str, float] = {}  # train metrics of an eval step, written with the eval metrics
  t_last, steps_since = time.perf_counter(), 0
  profile = config_lib.profile_range(config)
  tracing = False
  flops_per_step = 0.0  # of the whole (global) step; set at the first step

  def finish_step(step: int, metrics):
    """Host side of a step, one step behind the device: NaN check, logging, progress."""
    nonlocal t_last, steps_since
    metrics = jax.device_get(metrics)
    loss = float(metrics['loss'])
    # The loss is computed before the update; a finite gradient norm shows the update kept params finite.
    if not (math.isfinite(loss) and math.isfinite(float(metrics['grad_norm']))):
      raise NonFiniteLossError(
          f'non-finite training loss ({loss}) or gradient norm ({float(metrics["grad_norm"])}) at step {step}; '
          f'the last good checkpoint '
          f'(step {checkpointer.latest_step()}) in {checkpointer.directory} is kept and the next run resumes from it')
    steps_since += 1
    if step % config.log_every == 0 or step == config.num_steps:
      now = time.perf_counter()
      rate = steps_since / max(now - t_last, 1e-9)
      t_last, steps_since = now, 0
      record = {k: float(v) for k, v in metrics.items()}
      record['steps_per_s'] = rate
      if flops_per_step:
        record.update(perf.throughput(flops_per_step, rate, jax.device_count()))
      last.update(record)
      if step % config.eval_every == 0 or step == config.num_steps:
        stash.update(record)
      else:
        writer.write(step, record)
      if bar is not None:
        bar.set_postfix(loss=f'{loss:.4f}', steps_per_s=f'{rate:.2f}')
    if bar is not None:
      bar.update(1)

  stopped = None  # (step, signal name) when SIGTERM/SIGINT stopped the run
  signals = StopSignals(agree_every=config.log_every).install()
  try:
    for step in range(start + 1, config.num_steps + 1):
      if profile and step == profile[0]:
        jax.profiler.start_trace(str(workdir / 'profile'))
        tracing = True
      with jax.profiler.StepTraceAnnotation('train', step_num=step):
        batch = shard_lib.global_batch(next(train_it), trainer.batch_sharding)
        if step == start + 1:
          train_step, flops_per_step = _compile_step(trainer, state, batch, rng)
        state, metrics = train_step(state, batch, rng)
      if tracing and step == profile[1] - 1:
        jax.block_until_ready(metrics)
        jax.profiler.stop_trace()
        tracing = False
      if pending is not None:
        finish_step(*pending)
      pending = (step, metrics)
      at_end = step == config.num_steps
      # Preemption or Ctrl-C: this step is done; log it, save it and stop (every process at the same step).
      stop = signals.should_stop(step) and not at_end
      if step % config.checkpoint_every == 0 or step % config.eval_every == 0 or at_end or stop:
        finish_step(*pending)
        pending = None
      if step % config.eval_every == 0 or at_end:
        eval_metrics = trainer.evaluate(state.params, source, config.num_eval_batches)
        writer.write(step, {**stash, **eval_metrics})
        writer.flush()
        stash.clear()
        last.update(eval_metrics)
        if bar is not None:
          bar.write(f'step {step}: ' + ', '.join(f'{k}={v:.4f}' for k, v in sorted(eval_metrics.items())))
      if step % config.checkpoint_every == 0 or at_end or stop:
        writer.flush()  # before the checkpoint: metrics.jsonl always holds every record up to the latest one
        checkpointer.save(step, state, train_it.get_state())
      if stop:
        stopped = (step, signals.received)
        break
    if pending is not None:
      finish_step(*pending)
  except BaseException:
    # Stopping on an error: keep what is saved (the pending save completes) and report the first error.
    signals.uninstall()
    _stop_trace(tracing)
    _close_quietly(checkpointer, writer, bar)
    raise
  signals.uninstall()
  _stop_trace(tracing)
  checkpointer.close()  # waits for the last save
  writer.close()
  if bar is not None:
    bar.close()
  if stopped is not None:
    raise Preempted(stopped[0], stopped[1], workdir)
  return last


def _stop_trace(tracing: bool):
  if tracing:
    jax.profiler.stop_trace()


def _close_quietly(checkpointer, writer, bar):
  """Closes the run's writers after an error, logging (not raising) their own errors."""
  for close in (checkpointer.close, writer.close, bar.close if bar is not None else None):
    if close is None:
      continue
    try:
      close()
    except Exception as e:  # noqa: BLE001
      logging.warning('while stopping after an error: %s', e)


def _compile_step(trainer: Trainer, state, batch, rng):
  """(train step, FLOPs of one step on all devices): the step compiled once for these arguments, and its FLOP
  count from the same trace and lowering (0 when unavailable)."""
  if not hasattr(trainer.train_step, 'trace'):  # a wrapped step (tests)
    return trainer.train_step, 0.0
  compiled, flops = perf.compile_with_flops(trainer.train_step, state, batch, rng)
  return compiled, flops['flops'] if flops else 0.0


def initial_params(config, trainer: Trainer):
  """Parameters of config.init_from's latest checkpoint, fitted to this run's parameter tree: groups this
  run lacks are dropped, and DMT's readout starts as the source's readout (if it was fine-tuned) or its
  decoder. Placed with this run's shardings."""
  _, src = load_params(config.init_from)
  want = trainer.abstract_state.params
  params = {}
  for k in want:
    if k in src:
      params[k] = src[k]
    elif k == 'readout':
      params[k] = src['decoder']
    else:
      raise ckpt_lib.CheckpointError(f'{config.init_from} has no parameters {k!r} that this run needs')
  try:
    return jax.tree.map(lambda a, w: jax.device_put(a, w.sharding), params, want)
  except ValueError as e:
    raise ckpt_lib.CheckpointError(f'the parameters in {config.init_from} do not fit this config: {e}') from e


def load_params(workdir, config=None, step: int | None = None):
  """(config, params) of a trained run (latest checkpoint unless `step`), e.g. for notebooks."""
  if config is None:
    if not (epath.Path(workdir) / 'config.json').exists():
      raise ckpt_lib.CheckpointError(f'{workdir} holds no trained run: no config.json')
    config = ml_collections.ConfigDict(json.loads((epath.Path(workdir) / 'config.json').read_text()))
  trainer = Trainer.create(config)
  checkpointer = ckpt_lib.Checkpointer(workdir, config.max_checkpoints_to_keep)
  try:
    if checkpointer.latest_step() is None:
      raise ckpt_lib.CheckpointError(f'no checkpoint in {checkpointer.directory}')
    if step is None:  # the newest that restores (a damaged newer one is logged, and left for training to set aside)
      _, state, _ = checkpointer.restore_latest(trainer.abstract_state, set_aside=False)
    else:
      state, _ = checkpointer.restore(trainer.abstract_state, step)
  finally:
    checkpointer.close()
  return config, state.params
