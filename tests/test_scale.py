"""Scale-out: resharding restores across meshes (8 fake CPU devices) and a real two-process run."""

import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap

from smtjax import metrics as metrics_lib
from tests.conftest import xla_flags

ROOT = pathlib.Path(__file__).resolve().parents[1]

RESHARD = textwrap.dedent('''
    import sys, jax, numpy as np
    sys.path.insert(0, 'tests')
    from conftest import tiny_config
    from smtjax import train, checkpoint
    from smtjax.data import make_source
    from smtjax.data.pipeline import BatchIterator
    from smtjax.sharding import global_batch
    workdir = sys.argv[1]

    def trainer_for(data, fsdp, devices=None):
      c = tiny_config()
      c.mesh.data, c.mesh.fsdp = data, fsdp
      return c, train.Trainer.from_config(c, devices)

    def steps(trainer, c, state, it, n):
      out = []
      for _ in range(n):
        state, m = trainer.train_step(state, global_batch(next(it), trainer.batch_sharding), jax.random.PRNGKey(0))
        out.append(float(m['loss']))
      return state, out

    c, tr = trainer_for(8, 1)
    it = BatchIterator(make_source(c.data, 0), 'train', c.batch_size)
    state, _ = steps(tr, c, tr.init_state(jax.random.PRNGKey(0)), it, 3)
    ck = checkpoint.Checkpointer(workdir)
    ck.save(3, state, it.get_state())
    ck.wait()
    _, reference = steps(tr, c, state, it, 3)  # continuing on the saving mesh

    for data, fsdp, devices in [(2, 4, None), (1, 1, jax.devices()[:1])]:
      c2, tr2 = trainer_for(data, fsdp, devices)
      restored, data_state = ck.restore(tr2.abstract_state)
      leaf = restored.params['encoder']['embed']['embedding']
      assert leaf.sharding.is_equivalent_to(tr2.state_shardings.params['encoder']['embed']['embedding'], leaf.ndim)
      it2 = BatchIterator(make_source(c2.data, 0), 'train', c2.batch_size)
      it2.set_state(data_state)
      _, cont = steps(tr2, c2, restored, it2, 3)
      np.testing.assert_allclose(cont, reference, rtol=2e-5, atol=1e-6)
    ck.close()
    print('OK', reference)
''')


def test_checkpoint_from_8x1_mesh_restores_onto_2x4_and_1x1(tmp_path):
  env = {**os.environ, 'XLA_FLAGS': xla_flags('--xla_force_host_platform_device_count=8')}
  r = subprocess.run([sys.executable, '-c', RESHARD, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                     timeout=300, env=env)
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'OK' in r.stdout


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_train_one_run(tmp_path):
  """Two processes on localhost (jax.distributed, gloo CPU collectives) train one run together."""
  port = _free_port()
  wd = tmp_path / 'run'
  args = ['-m', 'experiments.run', '--config=configs/retrieval.py:small', f'--workdir={wd}',
          '--config.data.seq_len=8', '--config.smt.future=8', '--config.model.d_model=16',
          '--config.model.num_heads=2', '--config.model.enc_depth=1', '--config.model.dec_depth=1',
          '--config.model.cell_depth=1', '--config.batch_size=8', '--config.num_steps=4', '--config.log_every=1',
          '--config.eval_every=4', '--config.checkpoint_every=2', '--config.num_eval_batches=1',
          '--config.progress_bar=False', f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2']
  env = {**os.environ, 'XLA_FLAGS': xla_flags()}
  procs = [subprocess.Popen([sys.executable, *args, f'--process_id={i}'], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  assert 'final:' in outs[0][0] and 'final:' not in outs[1][0]  # printed once, by process 0
  lines = [next(l for l in outs[0][0].splitlines() if l.startswith('final:')),
           next(l for l in outs[1][1].splitlines() if l.startswith('p1 ') and 'final:' in l)]  # p1: absl, on stderr
  finals = [dict(kv.split('=') for kv in l.split('final: ', 1)[1].split(', ')) for l in lines]
  for f in finals:
    for k in metrics_lib.TIMING_KEYS:  # timings, not metrics
      f.pop(k, None)
  assert finals[0] == finals[1] and 'loss' in finals[0]  # both processes agree on every metric
  records = [json.loads(l) for l in (wd / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in records] == [1, 2, 3, 4]  # written once, by process 0
  assert sorted(os.listdir(wd / 'checkpoints')) == ['2', '4']
