"""The command-line runner and multi-device agreement, each in a fresh process."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

from tests.conftest import xla_flags

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ['--config.data.seq_len=8', '--config.smt.future=8', '--config.model.d_model=16', '--config.model.num_heads=2',
        '--config.model.enc_depth=1', '--config.model.dec_depth=1', '--config.model.cell_depth=1',
        '--config.batch_size=8', '--config.num_steps=6', '--config.log_every=2', '--config.eval_every=3',
        '--config.checkpoint_every=3', '--config.num_eval_batches=1', '--config.progress_bar=False']


def _run(args, env=None, timeout=300):
  return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                        env={**os.environ, **(env or {})})


def test_runner_trains_writes_workdir_and_resumes(tmp_path):
  wd = tmp_path / 'run1'
  cmd = ['-m', 'experiments.run', '--config=configs/retrieval.py:small', f'--workdir={wd}', *TINY]
  r = _run(cmd)
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'final:' in r.stdout
  config = json.loads((wd / 'config.json').read_text())
  assert config['model']['d_model'] == 16 and config['data']['name'] == 'retrieval'
  records = [json.loads(l) for l in (wd / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in records] == [2, 3, 4, 6]
  for name in ('loss', 'loss_dec', 'loss_dec0', 'loss_dyn', 'loss_unif'):
    assert name in records[0] and f'{name}_test' in records[1]
  assert sorted(os.listdir(wd / 'checkpoints')) == ['3', '6']
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(wd / 'tensorboard'))
  # Same command with more steps: resumes from the last checkpoint.
  r = _run([*cmd, '--config.num_steps=9'])
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'Resumed' in r.stderr and 'at step 6' in r.stderr  # absl logging, on stderr
  assert r.stdout.count('final:') == 1


def test_runner_rejects_bad_config_naming_the_field(tmp_path):
  r = _run(['-m', 'experiments.run', '--config=configs/retrieval.py:small', f'--workdir={tmp_path / "w"}',
            '--config.optim.lr=-1'])
  assert r.returncode != 0
  assert 'config.optim.lr' in r.stderr
  assert not (tmp_path / 'w').exists()
  r = _run(['-m', 'experiments.run', '--config=configs/retrieval.py:nope'])
  assert r.returncode != 0 and 'nope' in r.stderr


MULTI_DEVICE = textwrap.dedent('''
    import sys, jax, numpy as np
    sys.path.insert(0, 'tests')
    from conftest import tiny_config
    from smtjax import train
    from smtjax.data import make_source
    from smtjax.data.pipeline import BatchIterator
    from smtjax.sharding import global_batch
    assert jax.device_count() == 8, jax.devices()

    def run(data, fsdp, devices):
      c = tiny_config()
      c.mesh.data, c.mesh.fsdp = data, fsdp
      trainer = train.Trainer.from_config(c, devices)
      state = trainer.init_state(jax.random.PRNGKey(0))
      it = BatchIterator(make_source(c.data, 0), 'train', c.batch_size)
      losses = []
      for _ in range(3):
        state, m = trainer.train_step(state, global_batch(next(it), trainer.batch_sharding), jax.random.PRNGKey(0))
        losses.append(float(m['loss']))
      return losses, jax.device_get(state.params), state

    one, p1, _ = run(1, 1, jax.devices()[:1])
    for data, fsdp in [(8, 1), (2, 4)]:
      many, p8, state = run(data, fsdp, None)
      np.testing.assert_allclose(many, one, rtol=2e-5, atol=1e-6)
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), p8, p1)
      if fsdp > 1:  # parameters really are split over the fsdp axis
        emb = state.params['encoder']['embed']['embedding']
        assert len(emb.sharding.device_set) == 8 and emb.addressable_shards[0].data.size * 4 == emb.size
    print('OK', one)
''')


def test_train_step_on_8_fake_devices_matches_one_device():
  r = _run(['-c', MULTI_DEVICE], env={'XLA_FLAGS': xla_flags('--xla_force_host_platform_device_count=8')})
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'OK' in r.stdout
