"""Times the public PyTorch SMT code (github.com/akarshkumar0101/smt, its src/) on CPU, to set beside smtjax's
`benchmarks.public_architecture`: d=128, K=8 memory tokens, 4 heads of width 64, depths 4/2/4 (teacher encoder,
decoders, RNN cell), Tc=128, Tf=32, batch 16, float32, bytes (vocabulary 256), eager torch on 2 threads.
Each step is one forward + backward + per-network gradient clipping (1.0) + AdamW step on random bytes:

- window SMT: train_smt.py's training step around model.forward_smt (T = Tc + Tf = 160);
- DMT: train_dmt.py's training step around model.forward_dmt with the README's DMT flags, Td=32 rollout
  steps matched every k=8 (T = Tc + Td + Tf = 192);
- BPTT: model.forward_bptt over T=160. The public code has no BPTT train script: the step is composed like
  train_smt.py's, over the RNN's parameters alone.

The train scripts' periodic no-grad test pass, learning-rate schedule and logging are left out. One untimed
warm-up step per kind, then --steps timed steps; prints the min and median seconds of each.

It runs in a virtual environment of its own and imports only torch and the public code (smtjax never depends on
torch). PyPI's default Linux torch wheel pulls the CUDA libraries; a CPU wheel does without them:

  python3 -m venv /work/torchvenv
  /work/torchvenv/bin/pip install 'torch==2.13.0+cpu'  # a CPU build: the default Linux wheel pulls CUDA
  /work/torchvenv/bin/pip install 'x-transformers==2.18.5' 'einops==0.8.1' tqdm numpy  # the public pins
  git clone https://github.com/akarshkumar0101/smt /work/public_smt
  /work/torchvenv/bin/python experiments/bench_public.py --src=/work/public_smt/src --steps=10
"""

import argparse
import statistics
import sys
import time

import torch

D, K, HEADS, VOCAB = 128, 8, 4, 256  # x-transformers' default head width: 64
TC, TF, TD, EVERY = 128, 32, 32, 8


def _batch(B, T):
  """Random bytes as the public MyDataset.sample_batch returns them: y[t] = x[t+1]."""
  seq = torch.randint(0, VOCAB, (B, T + 1))
  return dict(x=seq[:, :-1], y=seq[:, 1:])


def _train_step(opt, forward, batch, clip):
  """The public scripts' training step: zero_grad, forward, backward, clip_grad_norm_ per network, step."""
  opt.zero_grad(set_to_none=True)
  out = forward(batch)
  out['loss'].backward()
  for net in clip:
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
  opt.step()
  return out['loss'].item()


def make_steps(src, B):
  """{kind: a no-argument train step} built from the public code's own modules and forward passes."""
  sys.path.insert(0, src)
  import model as pm  # the public src/model.py

  mem = dict(vocab_size=VOCAB, mem_size=K * D, mem_tokens=K, d_model=D, decoder_depth=2, n_heads=HEADS)
  rnn = pm.RNN(pm.RNNConfig(rnn_depth=4, **mem))
  teacher = pm.Teacher(pm.TeacherConfig(encoder_depth=4, **mem))
  rnn.train(), teacher.train()
  print(f'parameters: teacher {sum(p.numel() for p in teacher.parameters())}, '
        f'RNN {sum(p.numel() for p in rnn.parameters())}')

  def adamw(params, lr):  # the train scripts' optimizer and the README's hyperparameters
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.01, betas=(0.9, 0.95))

  # train_smt.py: RNN and teacher both trained (hot_rnn, hot_teacher); SMTConfig's defaults are the README's.
  smt_cfg = pm.SMTConfig(T=TC + TF, Tc=TC, Tf=TF)
  smt_opt = adamw([*rnn.parameters(), *teacher.parameters()], 3e-4)
  smt_batch = _batch(B, smt_cfg.T)
  # train_dmt.py: only the RNN is optimised, but the teacher keeps requires_grad, so the backward also runs
  # through its encoder and decoder (the memory targets are not detached) and its gradients are clipped.
  dmt_cfg = pm.DMTConfig(T=TC + TD + TF, Td=TD, Tc=TC, Tf=TF, k=EVERY, coef_dec=1.0, coef_dyn=10.0,
                         coef_unif=0.01, coef_readout=1.0, detach_readout=True, detach_rnn=False,
                         hot_rnn=True, hot_teacher_encoder=False, hot_teacher_decoder=False)
  dmt_opt = adamw(rnn.parameters(), 3e-5)
  dmt_batch = _batch(B, dmt_cfg.T)
  # Composed (no public script): BPTT of the RNN cell and its own readout decoder.
  bptt_cfg = pm.BPTTConfig(T=TC + TF)
  bptt_opt = adamw(rnn.parameters(), 3e-4)
  bptt_batch = _batch(B, bptt_cfg.T)

  return {
      'window SMT': lambda: _train_step(smt_opt, lambda b: pm.forward_smt(rnn, teacher, b, smt_cfg), smt_batch,
                                        (rnn, teacher)),
      'DMT': lambda: _train_step(dmt_opt, lambda b: pm.forward_dmt(rnn, teacher, b, dmt_cfg), dmt_batch,
                                 (rnn, teacher)),
      'BPTT': lambda: _train_step(bptt_opt, lambda b: pm.forward_bptt(rnn, b, bptt_cfg), bptt_batch, (rnn,)),
  }


def time_step(step, n):
  """(min, median) seconds of n calls after one untimed warm-up call."""
  step()
  times = []
  for _ in range(n):
    t0 = time.perf_counter()
    step()
    times.append(time.perf_counter() - t0)
  return min(times), statistics.median(times)


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--src', required=True, help="the public repository's src/ folder")
  p.add_argument('--steps', type=int, default=10, help='timed steps per kind')
  p.add_argument('--threads', type=int, default=2, help='torch.set_num_threads')
  p.add_argument('--batch', type=int, default=16)
  p.add_argument('--kinds', default='window SMT,DMT,BPTT', help='comma-separated subset of the step kinds')
  a = p.parse_args()
  torch.set_num_threads(a.threads)
  torch.manual_seed(0)
  print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, batch {a.batch}, float32')
  steps = make_steps(a.src, a.batch)
  for kind in a.kinds.split(','):
    lo, med = time_step(steps[kind], a.steps)
    print(f'public {kind}: min {lo:.3f} s, median {med:.3f} s', flush=True)


if __name__ == '__main__':
  main()
