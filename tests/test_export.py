"""Accelerator programs, lowered without an accelerator: every train and eval step the configs build
(window and parallel SMT, chunked and dense, DMT, BPTT full and truncated, the evaluator's step), at tiny size
in bfloat16 with rematerialisation, exported with `jax.export` for CUDA and for TPU on this CPU machine, over
a (data=2, fsdp=4) mesh of 8 CPU devices. The CUDA programs must use cuDNN's fused attention and neither
program the CPU attention; the shardings must survive lowering and export. (On a mesh, JAX wraps cuDNN's
attention in its custom partitioner, a Python callback that jax.export cannot serialize: the sharded CUDA
programs are lowered and checked, and the CUDA program is exported on one device.) At the published size
(K=16: the cell reads 17 tokens, the decoder 79, odd lengths that cuDNN's kernels refuse unpadded) every
attention call of the window-SMT, DMT and BPTT steps must be one of cuDNN's, counted call by call; the
same step lowered for the CPU must hold the CPU attention (the control that the count can see attention).

cuDNN's lowering asks the local cuDNN library for its version, which a CPU machine does not have: the script
answers 9.10 (the version a CUDA 12 wheel of jax 0.10 ships), which changes what the lowering may emit,
never what smtjax asks for."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT, xla_flags

EXPORT = textwrap.dedent('''
    import json, re, sys
    import jax
    from jax._src.cudnn import fused_attention_stablehlo as fused
    fused.check_cudnn_version = lambda: 91000  # a machine with cuDNN 9.10 (see the module docstring)
    sys.path.insert(0, '.')
    from tests.conftest import tiny_config
    from smtjax import perf, train, variants

    def config(kind, mesh):
      c = tiny_config('window' if kind == 'smt_window' else 'parallel')
      c.model.dtype, c.model.remat, c.model.residual_dtype = 'bfloat16', True, 'float32'
      c.model.num_mem_tokens = 2  # odd attention lengths (cell K+1, decoder K+Tf-1): padded for cuDNN
      c.mesh.data, c.mesh.fsdp = mesh
      if kind == 'smt_chunked':
        c.model.prefix_chunk = 4
      if kind == 'dmt':
        c = variants.dmt(c, context=2, rollout=6, every=3, batch_size=8)  # lowered, never trained: no init_from
      if kind.startswith('bptt'):
        c.method = 'bptt'
        c.bptt.truncation = 3 if kind == 'bptt_truncated' else 0
      return c

    def steps(kind, mesh):
      c = config(kind, mesh)
      tr = train.Trainer.from_config(c, jax.devices()[:mesh[0] * mesh[1]])
      batch = {k: jax.ShapeDtypeStruct((c.batch_size, c.data.seq_len), 'int32', sharding=tr.batch_sharding)
               for k in ('x', 'y')}
      replicated = jax.sharding.NamedSharding(tr.mesh, jax.sharding.PartitionSpec())
      rng = jax.ShapeDtypeStruct((2,), 'uint32', sharding=replicated)
      out = {'train': (tr.train_step, (tr.abstract_state, batch, rng))}
      if kind == 'smt_parallel':
        out['eval'] = (tr.evaluator.step, (tr.abstract_state.params, batch, rng))
      return out

    def count(jaxpr, name):  # equations `name` in a jaxpr and every jaxpr inside it
      n = 0
      for e in jaxpr.eqns:
        n += e.primitive.name == name
        for v in e.params.values():
          for item in (v if isinstance(v, (list, tuple)) else (v,)):
            if isinstance(item, (jax.extend.core.ClosedJaxpr, jax.extend.core.Jaxpr)):
              n += count(getattr(item, 'jaxpr', item), name)
      return n

    out = {}
    from smtjax.benchmarks import preset_configs
    for preset, label in (p.split(':') for p in sys.argv[2].split(',')):
      c = preset_configs(preset)[label]
      tr = train.Trainer.from_config(c, jax.devices()[:1])
      batch = {k: jax.ShapeDtypeStruct((c.batch_size, c.data.seq_len), 'int32') for k in ('x', 'y')}
      traced = tr.train_step.trace(tr.abstract_state, batch, jax.ShapeDtypeStruct((2,), 'uint32'))
      cuda = traced.lower(lowering_platforms=('cuda',)).as_text(debug_info=True)
      calls = re.findall(r'__cudnn\\$fmha(\\w+)', cuda)
      out[f'{preset}:{label}'] = dict(
          K=c.model.num_mem_tokens, sites=count(traced.jaxpr.jaxpr, 'platform_index'),  # one per attention call
          cudnn_forward=sum('Backward' not in name for name in calls), xla_attention='smtjax_xla_attention' in cuda,
          cpu_control='smtjax_cpu_attention' in traced.lower(lowering_platforms=('cpu',)).as_text(debug_info=True))
    for kind in sys.argv[1].split(','):
      for step, (fn, args) in steps(kind, (2, 4)).items():  # sharded over (data, fsdp) = (2, 4)
        for platform in ('cuda', 'tpu'):
          text = fn.trace(*args).lower(lowering_platforms=(platform,)).as_text(debug_info=True)
          out[f'{kind}/{step}/{platform}'] = dict(
              cudnn='__cudnn$fmha' in text or '@CustomSPMDPartitioning' in text,  # cuDNN attention's partitioner
              cpu_attention='smtjax_cpu_attention' in text,
              fsdp_sharded=len(re.findall(r'"fsdp"', text)), data_sharded=len(re.findall(r'"data"', text)))
        exp = perf.export_step(fn, args, ('tpu',))  # serialized with its shardings (Shardy annotations)
        text = exp.mlir_module()
        out[f'{kind}/{step}/tpu'].update(devices=exp.nr_devices, mesh='sdy.mesh @mesh = <["data"=2, "fsdp"=4]>' in text,
                                        sharded=len(re.findall(r'sdy.sharding<@mesh, \\[[^]]*"fsdp"', text)))
      for step, (fn, args) in steps(kind, (1, 1)).items():  # one device: the serialized CUDA program
        text = perf.export_step(fn, args, ('cuda',)).mlir_module()
        out[f'{kind}/{step}/cuda'].update(exported_cudnn='__cudnn$fmha' in text,
                                         exported_cpu_attention='smtjax_cpu_attention' in text)
    print('RESULT', json.dumps(out))
''')

KINDS = ('smt_window', 'smt_parallel', 'smt_chunked', 'dmt', 'bptt', 'bptt_truncated')
PUBLISHED = ('paper_smt:SMT (window)', 'paper_dmt:DMT', 'paper_bptt:BPTT')


@pytest.fixture(scope='module')
def exported():
  env = {**os.environ, 'XLA_FLAGS': xla_flags('--xla_force_host_platform_device_count=8')}
  r = subprocess.run([sys.executable, '-c', EXPORT, ','.join(KINDS), ','.join(PUBLISHED)], cwd=ROOT, env=env,
                     capture_output=True, text=True, timeout=900)
  assert r.returncode == 0, r.stderr[-4000:]
  return json.loads(r.stdout.split('RESULT ', 1)[1])


def _check(e: dict, name: str):
  cuda, tpu = e[f'{name}/cuda'], e[f'{name}/tpu']
  for platform, r in (('cuda', cuda), ('tpu', tpu)):
    assert not r['cpu_attention'], f'{name} on {platform}: the CPU attention is in the program'
    assert r['fsdp_sharded'] > 0 and r['data_sharded'] > 0, f'{name} on {platform}: the mesh axes are gone'
  assert cuda['cudnn'], f'{name}: no cuDNN fused attention in the sharded CUDA program'
  assert cuda['exported_cudnn'] and not cuda['exported_cpu_attention'], f'{name}: serialized CUDA program'
  assert not tpu['cudnn'], f'{name}: cuDNN in the TPU program'
  assert tpu['devices'] == 8 and tpu['mesh'] and tpu['sharded'] > 0, f'{name}: the exported TPU program lost its mesh'


@pytest.mark.parametrize('kind', KINDS)
def test_every_train_step_lowers_for_cuda_and_tpu(exported, kind):
  _check(exported, f'{kind}/train')


def test_the_eval_step_lowers_for_cuda_and_tpu(exported):
  _check(exported, 'smt_parallel/eval')


@pytest.mark.parametrize('preset', PUBLISHED)
def test_every_attention_call_is_cudnn_at_the_published_size(exported, preset):
  r = exported[preset]
  assert r['K'] == 16 and r['cpu_control'], r
  assert r['sites'] > 0 and r['cudnn_forward'] == r['sites'] and not r['xla_attention'], r


def test_one_program_for_cuda_and_another_platform_says_why_not():
  """cuDNN's attention lowers for CUDA alone: export for CUDA with TPU raises, naming the ways out; for CPU and
  TPU together one program carries both paths."""
  import jax

  from smtjax import perf, train
  from tests.conftest import tiny_config
  c = tiny_config()
  tr = train.Trainer.from_config(c, jax.devices()[:1])
  batch = {k: jax.ShapeDtypeStruct((c.batch_size, c.data.seq_len), 'int32') for k in ('x', 'y')}
  args = (tr.abstract_state, batch, jax.ShapeDtypeStruct((2,), 'uint32'))
  with pytest.raises(NotImplementedError, match='SMTJAX_ATTENTION=xla'):
    perf.export_step(tr.train_step, args, ('cuda', 'tpu'))
  assert perf.export_step(tr.train_step, args, ('cpu', 'tpu')).platforms == ('cpu', 'tpu')
