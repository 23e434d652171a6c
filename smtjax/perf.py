"""Speed and memory made visible: FLOPs per step, peak accelerator throughput and MFU, compiled memory.

FLOPs come from XLA's cost analysis of the step's program. XLA counts a loop body once (whatever its trip
count), so a step with `lax.scan` (DMT and BPTT rollouts, chunked prefix groups) is also counted from
its jaxpr, where every matrix product is weighted by the trip counts of the scans around it; the step's
FLOPs are the larger of the two.
"""

from __future__ import annotations

import math
import os
from typing import Any

import jax
from absl import logging

# Dense bf16 peak throughput per chip, FLOP/s (vendor figures, without sparsity).
PEAK_BF16_FLOPS = {
    'H100': 989e12,  # SXM
    'H200': 989e12,
    'A100': 312e12,
    'TPU v4': 275e12,
    'TPU v5e': 197e12,
    'TPU v5p': 459e12,
}


def device_name(kind: str) -> str:
  """The PEAK_BF16_FLOPS key for a jax device_kind ('NVIDIA H100 80GB HBM3', 'TPU v5 lite', ...), or 'unknown'."""
  k = kind.lower()
  if 'tpu' in k:
    if 'v5 lite' in k or 'v5e' in k or 'v5litepod' in k:
      return 'TPU v5e'
    if 'v5p' in k or k.strip().endswith('v5'):
      return 'TPU v5p'
    if 'v4' in k:
      return 'TPU v4'
    return 'unknown'
  for name in ('H200', 'H100', 'A100'):
    if name.lower() in k:
      return name
  return 'unknown'


def peak_flops(device=None) -> tuple[str, float | None]:
  """(name, peak bf16 FLOP/s per chip) of `device` (default jax.devices()[0]); None when unknown (no MFU)."""
  device = device or jax.devices()[0]
  name = device_name(device.device_kind)
  return name, PEAK_BF16_FLOPS.get(name)


def xla_flops(stage) -> float:
  """'flops' of a jax Lowered or Compiled stage's cost analysis (0 when the backend reports none)."""
  cost = stage.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per program
    cost = cost[0] if cost else {}
  return float((cost or {}).get('flops', 0.0))


def _sub_jaxprs(eqn):
  for v in eqn.params.values():
    for item in (v if isinstance(v, (list, tuple)) else (v,)):
      if isinstance(item, jax.extend.core.ClosedJaxpr):
        yield item.jaxpr
      elif isinstance(item, jax.extend.core.Jaxpr):
        yield item


def _jaxpr_flops(jaxpr) -> float:
  total = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == 'dot_general':
      (lhs_contract, _), _ = eqn.params['dimension_numbers']
      lhs = eqn.invars[0].aval.shape
      out = eqn.outvars[0].aval.shape
      total += 2.0 * math.prod(out) * math.prod(lhs[d] for d in lhs_contract)
    elif name == 'cond':
      total += max((_jaxpr_flops(b.jaxpr) for b in eqn.params['branches']), default=0.0)
    else:
      inner = sum(_jaxpr_flops(j) for j in _sub_jaxprs(eqn))
      total += inner * (eqn.params['length'] if name == 'scan' else 1)
  return total


def _module_of(name_stack: str, names: dict[str, str]) -> str:
  """The network a traced operation belongs to: the first of `names` (a module class name -> label) in its
  name stack ('transpose(jvp(Encoder.prefix_memories))/block_0/...'), else 'other'."""
  for part in name_stack.replace('(', '/').replace(')', '/').replace('.', '/').split('/'):
    if part in names:
      return names[part]
  return 'other'


def _jaxpr_flops_by(jaxpr, names: dict[str, str], outer: str = '') -> dict[str, float]:
  out: dict[str, float] = {}
  for eqn in jaxpr.eqns:
    stack = f'{outer}/{eqn.source_info.name_stack}'  # a sub-program's names are its own: carry the caller's down
    name = eqn.primitive.name
    if name == 'dot_general':
      (lhs_contract, _), _ = eqn.params['dimension_numbers']
      flops = 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(eqn.invars[0].aval.shape[d] for d in lhs_contract)
      key = _module_of(stack, names)
      out[key] = out.get(key, 0.0) + flops
      continue
    inner = [_jaxpr_flops_by(j, names, stack) for j in _sub_jaxprs(eqn)]
    if name == 'cond':
      inner = [max(inner, key=lambda d: sum(d.values()))] if inner else []
    trips = eqn.params['length'] if name == 'scan' else 1
    for d in inner:
      for k, v in d.items():
        out[k] = out.get(k, 0.0) + trips * v
  return out


def network_flops(jitted, *args, cell: str) -> dict[str, float]:
  """FLOPs of the matrix products of one call of a jitted step, by network: {'encoder', 'decoder', 'cell',
  'other'} (the decoder includes its use as the RNN's readout; `cell` is the cell module's class name), scans
  counted by trip count, forward and backward alike. Traced, never compiled."""
  jaxpr = jitted.trace(*args).jaxpr.jaxpr
  names = {'Encoder': 'encoder', 'Decoder': 'decoder', cell: 'cell'}
  counts = _jaxpr_flops_by(jaxpr, names)
  return {k: counts.get(k, 0.0) for k in ('encoder', 'decoder', 'cell', 'other')}


def _nbytes(v) -> float:
  aval = v.aval
  return float(math.prod(aval.shape)) * aval.dtype.itemsize if hasattr(aval, 'dtype') else 0.0


# The name scope smtjax.layers puts around what a fused attention kernel keeps on chip (scores, probabilities).
ATTENTION_CORE = 'attention_core'


def _in_attention_core(eqn) -> bool:
  return ATTENTION_CORE in str(eqn.source_info.name_stack)


def _jaxpr_bytes(jaxpr, in_core: bool = False, invariant=frozenset()) -> tuple[float, float, float, float]:
  """(matmul bytes, all bytes, invariant bytes, cacheable bytes): what every matrix product outside attention
  cores reads and writes (a fused attention kernel keeps its scores on chip; its inputs and output are the
  projections' own) and what every operation reads and writes with nothing fused, each weighted by the trip
  counts of the scans around it; of the matmul bytes, those of operands in `invariant` (the same at every trip
  of the enclosing scan: its closed-over weights and what is computed from them alone), and those a cache
  could keep: every trip after the first of a scan re-reading such an operand."""
  matmul = total = inv_bytes = cacheable = 0.0
  invariant = set(invariant)
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    core = in_core or _in_attention_core(eqn)  # a sub-program's names are its own: carry the scope down
    if eqn.invars and all(isinstance(v, jax.extend.core.Literal) or v in invariant for v in eqn.invars):
      invariant.update(eqn.outvars)  # computed from loop constants only (e.g. a weight cast to bfloat16)
    subs = list(_sub_jaxprs(eqn))
    if subs:
      trips = eqn.params['length'] if name == 'scan' else 1
      inner = []
      for j in subs:
        if name == 'scan':  # a scan's constants are the same at every one of its trips
          inv = set(j.invars[:eqn.params['num_consts']])
        else:  # cond, pjit, custom_vjp...: what is constant in the caller stays so inside
          outer = eqn.invars[len(eqn.invars) - len(j.invars):]
          inv = {iv for iv, ov in zip(j.invars, outer)
                 if not isinstance(ov, jax.extend.core.Literal) and ov in invariant}
        inner.append(_jaxpr_bytes(j, core, frozenset(inv)))
      if name == 'cond':
        inner = [max(inner, key=lambda b: b[1])]
      for m, a, inv_m, c in inner:
        matmul, total, cacheable = matmul + trips * m, total + trips * a, cacheable + trips * c
        if name == 'scan':
          cacheable += (trips - 1) * inv_m
        else:
          inv_bytes += inv_m
      continue
    moved = sum(_nbytes(v) for v in eqn.invars if hasattr(v, 'aval')) + sum(_nbytes(v) for v in eqn.outvars)
    total += moved
    if name == 'dot_general' and not core:
      matmul += moved
      inv_bytes += sum(_nbytes(v) for v in eqn.invars if not isinstance(v, jax.extend.core.Literal) and v in invariant)
  return matmul, total, inv_bytes, cacheable


def step_flops(jitted, *args, compiled=None) -> dict[str, float]:
  """{'xla', 'matmul', 'flops'} of one call of a jitted function: XLA's count (of `compiled` if given,
  else of the lowered program: no compilation), the scan-aware matmul count, and the larger."""
  traced = jitted.trace(*args)
  return _flops(traced.jaxpr, compiled if compiled is not None else traced.lower())


def compile_with_flops(jitted, *args):
  """(compiled program, FLOPs) of jitted(*args) from one trace and one lowering: the program a training loop
  runs, and its `step_flops` count (XLA's count of the global lowered program) at no extra tracing; FLOPs
  are None when the cost model fails."""
  traced = jitted.trace(*args)
  lowered = traced.lower()
  try:
    flops = _flops(traced.jaxpr, lowered)
  except Exception as e:  # noqa: BLE001 -- a missing cost model must not stop training
    logging.warning('no FLOP count for %s (%s: %s)', getattr(jitted, '__name__', 'the step'), type(e).__name__, e)
    flops = None
  return lowered.compile(), flops


def _flops(closed_jaxpr, stage) -> dict[str, float]:
  xla = xla_flops(stage)
  mm = _jaxpr_flops(closed_jaxpr.jaxpr)
  return dict(xla=xla, matmul=mm, flops=max(xla, mm))


def memory(compiled) -> dict[str, Any]:
  """Bytes of a compiled program: temp, argument, output, alias, and peak = temp + argument + output -
  alias (donated inputs that become outputs are counted once)."""
  m = compiled.memory_analysis()
  out = dict(temp=m.temp_size_in_bytes, argument=m.argument_size_in_bytes, output=m.output_size_in_bytes,
             alias=m.alias_size_in_bytes)
  out['peak'] = out['temp'] + out['argument'] + out['output'] - out['alias']
  return out


def throughput(flops_per_step: float, steps_per_s: float, num_devices: int = 1, device=None) -> dict[str, float]:
  """{'tflops_per_s'} and, on a device with a known peak, {'mfu'} (fraction of num_devices x peak)."""
  achieved = flops_per_step * steps_per_s
  out = {'tflops_per_s': achieved / 1e12}
  _, peak = peak_flops(device)
  if peak:
    out['mfu'] = achieved / (peak * num_devices)
  return out


# ------------------------------------------------------------------------------------ cross-platform export

# cuDNN's fused-attention custom calls (jax._src.cudnn.fused_attention_stablehlo): they have no serialization
# compatibility guarantee, so jax.export refuses them unless told that the program is for this jax version.
CUDNN_ATTENTION_CALLS = tuple(f'__cudnn$fmha{name}' for name in (
    'Softmax', 'ScaleBiasSoftmax', 'SoftmaxDropout', 'ScaleBiasSoftmaxDropout', 'SoftmaxBackward',
    'ScaleBiasSoftmaxBackward', 'SoftmaxDropoutBackward', 'ScaleBiasSoftmaxDropoutBackward'))


def export_step(jitted, args, platforms: tuple[str, ...]):
  """`jax.export` of a jitted step (a train or eval step of smtjax.train / smtjax.evaluation) for `platforms`
  ('cuda', 'tpu', 'cpu'), lowered on whatever machine this runs on: no device of those kinds is needed. `args`
  are arrays or jax.ShapeDtypeStructs (with shardings for a sharded step). The program may hold cuDNN's
  attention calls, so it is for the jax version that exported it (not a long-lived artifact).

  One program for several platforms works where CUDA is not among them (e.g. ('cpu', 'tpu')): each attention
  call carries every platform's path. cuDNN's attention has a lowering for CUDA alone, which jax applies to
  every platform of a multi-platform program, so CUDA with others raises NotImplementedError, naming the ways
  out: export for CUDA on its own, or with SMTJAX_ATTENTION=xla (XLA's attention everywhere)."""
  if 'cuda' in platforms and len(platforms) > 1 and os.environ.get('SMTJAX_ATTENTION', '') != 'xla':
    raise NotImplementedError(
        f'export for {platforms}: cuDNN\'s fused attention lowers for CUDA alone, so one program cannot carry it '
        'beside other platforms; export for ("cuda",) on its own, or set SMTJAX_ATTENTION=xla to use XLA\'s '
        'attention on every platform')
  checks = [jax.export.DisabledSafetyCheck.custom_call(name) for name in CUDNN_ATTENTION_CALLS]
  return jax.export.export(jitted, platforms=platforms, disabled_checks=checks)(*args)


# -------------------------------------------------------------------------------------------------- roofline

# Dense bf16 peak FLOP/s and memory bandwidth (bytes/s) per chip, vendor figures.
ROOFLINE_DEVICES = {
    'h100': ('H100 SXM', 989e12, 3.35e12),
    'h200': ('H200', 989e12, 4.8e12),
    'a100': ('A100 SXM 80GB', 312e12, 2.039e12),
    'tpu_v5p': ('TPU v5p', 459e12, 2.765e12),
}


def step_costs(jitted, *args) -> dict[str, float]:
  """{'flops', 'matmul_bytes', 'bytes', 'cacheable_bytes'} of one call of a jitted step, from its jaxpr (no
  compilation), every scan counted by its trip count: the FLOPs of its matrix products, the bytes those
  products read and write (the traffic no kernel fusion can avoid, but for attention scores kept on chip by a
  fused kernel), the bytes every operation reads and writes unfused (an upper estimate), and the part of the
  matmul bytes that scans spend re-reading the same weights at every trip (which a cache may keep)."""
  jaxpr = jitted.trace(*args).jaxpr.jaxpr
  matmul, total, _, cacheable = _jaxpr_bytes(jaxpr)
  return {'flops': _jaxpr_flops(jaxpr), 'matmul_bytes': matmul, 'bytes': total, 'cacheable_bytes': cacheable}


def roofline(costs: dict, device: str, published_s: float | None = None) -> dict:
  """The lowest step time on `device` (ROOFLINE_DEVICES): the larger of its FLOPs at peak throughput and its
  matmul traffic at full memory bandwidth, which of the two bounds it, and the MFU a measured (or published)
  step time corresponds to. `cached_memory_s` is the memory time if a scan's re-read weights stayed in cache:
  where it is much lower, a memory-bound floor is an estimate between the two."""
  name, peak, bandwidth = ROOFLINE_DEVICES[device]
  compute_s, memory_s = costs['flops'] / peak, costs['matmul_bytes'] / bandwidth
  cached_s = (costs['matmul_bytes'] - costs.get('cacheable_bytes', 0.0)) / bandwidth
  out = dict(device=name, compute_s=compute_s, memory_s=memory_s, unfused_memory_s=costs['bytes'] / bandwidth,
             cached_memory_s=cached_s, floor_s=max(compute_s, memory_s),
             bound='compute' if compute_s >= memory_s else 'memory')
  if published_s:
    out.update(published_s=published_s, published_mfu=costs['flops'] / (peak * published_s),
               published_over_floor=published_s / out['floor_s'])
  return out
