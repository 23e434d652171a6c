"""Writes tests/golden/torch_tiny.npz: the public PyTorch SMT code's numbers for tiny networks.

Run by hand (never in CI), with a separate virtual environment that has torch and the x-transformers
version the public code pins (requirements.txt of akarshkumar0101/smt: x-transformers==2.18.5):

    python3 -m venv /work/torchvenv
    /work/torchvenv/bin/pip install torch==2.13.0 numpy tqdm einops x-transformers==2.18.5
    /work/torchvenv/bin/python tools/golden/make_torch_golden.py --public-src /path/to/smt/src \
        [--public-commit HASH] [--out tests/golden/torch_tiny.npz] [--autocast-report]

`--public-src` is the `src/` folder of a checkout of the public code (its model.py is imported from there;
none of it is part of this repository). The fixture holds:

- `teacher.<key>` / `rnn.<key>`: the state dicts of the public `Teacher` and `RNN` (float16 arrays whose
  values are exactly what the networks ran with: every parameter was rounded to float16 before anything
  was computed, which halves the fixture without changing what it tests);
- `hparams`: a JSON string (sizes, lengths, coefficients, versions);
- `x`, `y`: the token batch (y[t] = x[t+1]); SMT, BPTT and read use leading slices of it;
- `smt.*`, `dmt.*`, `bptt.*`, `read.*`, `teacher_readout.*`: the public functions' outputs in float32,
  and `smt.grad.*` / `dmt.grad.*` / `bptt.grad.*`: gradients of their total losses for a few parameters;
- `opt.*`: two training steps of train_smt.py on the SMT batch, from copies of the networks (everything above is
  computed before them and from the unchanged weights): train_smt.py's `torch.optim.AdamW` over every RNN and
  Teacher parameter (weight decay, betas and eps as there: eps is torch's default 1e-8), its
  `clip_grad_norm_(rnn.parameters(), 1.0)` and `clip_grad_norm_(teacher.parameters(), 1.0)` before `opt.step()`,
  on forward_smt's total loss, in float32 (no autocast) and with a larger learning rate than the published 3e-4
  (OPT['lr']) so the updates stand well above float32 noise. The learning rate of each step is train_smt.py's
  `util.get_lr(itr, n_iters=2, lr, 'warmup_constant')`: its warm-up lasts n_iters // 100 = 0 steps, so both
  steps run at lr (recorded as hparams opt_lr_steps). `opt.step{1,2}.<name>`: a few parameters after each step,
  `opt.grad{1,2}.<name>` their gradients in that step (before clipping);
  `opt.loss` the SMT total loss each step's gradient came from (step 2's: a function of every parameter after
  step 1); `opt.grad_norm_rnn` / `opt.grad_norm_teacher`: clip_grad_norm_'s returns (the norms before clipping).

The uniformity loss draws `torch.randperm(N)[:512]` tokens; every N here is far below 512, so the draw is a
permutation of all tokens and the loss (a mean over all pairs) does not depend on it.
`--autocast-report` also prints the dtypes of the public SMT forward pass under bfloat16 autocast (CPU autocast,
a stand-in for train_smt.py's CUDA autocast that casts the same ops used here, linear and matmul, to bfloat16).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys

import numpy as np

HP = dict(
    vocab_size=16, d_model=16, mem_tokens=2, n_heads=2, dim_head=64,  # x-transformers' default head width
    encoder_depth=2, decoder_depth=1, rnn_depth=2,
    batch=4, Tc=6, Tf=4,  # SMT: T = Tc + Tf
    Td=4, k=2,  # DMT: T = Tc + Td + Tf
    bptt_T=8, read_len=6, eval_len=4,
    smt_coef_dec=1.0, smt_coef_dyn=0.1, smt_coef_unif=0.001, gamma=1.0,
    dmt_coef_dec=1.0, dmt_coef_dyn=10.0, dmt_coef_unif=0.01, dmt_coef_readout=1.0,
    seed=0,
)

SMT_GRADS = ('teacher.encoder.layers.0.1.to_q.weight', 'teacher.encoder.layers.3.1.ff.0.0.bias',
             'teacher.embed.weight', 'teacher.encoder_mem_register.weight', 'teacher.decoder.layers.1.1.ff.0.0.bias',
             'teacher.to_logits.weight', 'rnn.rnn.layers.0.1.to_v.weight', 'rnn.embed.weight', 'rnn.rnn.final_norm.g')
DMT_GRADS = ('rnn.rnn.layers.2.1.to_q.weight', 'rnn.decoder.layers.0.0.0.g', 'rnn.to_logits.bias')
BPTT_GRADS = ('rnn.rnn.layers.0.1.to_k.weight', 'rnn.decoder.final_norm.g', 'rnn.to_logits.weight')

# train_smt.py's optimizer (Config: lr, weight_decay, adam_betas, clip_grad_norm; AdamW's eps is torch's default),
# but for the learning rate: 1e-2 instead of 3e-4.
OPT = dict(lr=1e-2, weight_decay=1e-2, betas=(0.9, 0.95), eps=1e-8, clip=1.0, steps=2)
OPT_PARAMS = ('teacher.encoder.layers.0.1.to_q.weight', 'teacher.encoder.layers.0.0.0.g',
              'teacher.encoder.layers.3.1.ff.0.0.bias', 'teacher.encoder_mem_register.weight', 'teacher.embed.weight',
              'teacher.decoder.final_norm.g', 'teacher.to_logits.bias', 'rnn.rnn.layers.0.1.to_v.weight',
              'rnn.rnn.layers.1.0.0.g', 'rnn.rnn.final_norm.g')


def _param(teacher, rnn, name):
  net, _, key = name.partition('.')
  return dict((teacher if net == 'teacher' else rnn).named_parameters())[key]


def _grads(torch, loss, teacher, rnn, names):
  params = [_param(teacher, rnn, n) for n in names]
  return {n: g.detach().numpy().astype(np.float32)
          for n, g in zip(names, torch.autograd.grad(loss, params, allow_unused=False))}


def build(torch, model):
  torch.manual_seed(HP['seed'])
  common = dict(vocab_size=HP['vocab_size'], mem_size=HP['mem_tokens'] * HP['d_model'], mem_tokens=HP['mem_tokens'],
                d_model=HP['d_model'], decoder_depth=HP['decoder_depth'], n_heads=HP['n_heads'])
  teacher = model.Teacher(model.TeacherConfig(encoder_depth=HP['encoder_depth'], **common))
  rnn = model.RNN(model.RNNConfig(rnn_depth=HP['rnn_depth'], **common))
  with torch.no_grad():
    for net in (teacher, rnn):
      for name, p in net.named_parameters():
        if name.endswith('.g'):  # RMSNorm gains (1 + g, g starts at 0): move them off so the converter must carry them
          p.add_(0.2 * torch.randn_like(p))
        p.copy_(p.half().float())  # exactly representable in float16 (the fixture stores float16)
  return teacher.eval(), rnn.eval()


def batch(torch):
  g = torch.Generator().manual_seed(HP['seed'] + 1)
  T = HP['Tc'] + HP['Td'] + HP['Tf']
  seq = torch.randint(0, HP['vocab_size'], (HP['batch'], T + 1), generator=g)
  return seq[:, :-1].contiguous(), seq[:, 1:].contiguous()


def run(torch, model, teacher, rnn, x, y) -> dict:
  out = {}
  f32 = lambda t: t.detach().numpy().astype(np.float32)

  # SMT (forward_smt, the published flags: detach_rnn=False, unif_over_tokens=True).
  T = HP['Tc'] + HP['Tf']
  scfg = model.SMTConfig(T=T, Tc=HP['Tc'], Tf=HP['Tf'], gamma=HP['gamma'], coef_dec=HP['smt_coef_dec'],
                         coef_dyn=HP['smt_coef_dyn'], coef_unif=HP['smt_coef_unif'], detach_rnn=False)
  o = model.forward_smt(rnn, teacher, dict(x=x[:, :T], y=y[:, :T]), scfg)
  for k in ('m_now', 'm_next', 'm_next_pred', 'logits', 'loss_decoder_', 'loss_decoder', 'loss_decoder0',
            'loss_dyn', 'loss_unif', 'loss'):
    out[f'smt.{k}'] = f32(o[k])
  for n, g in _grads(torch, o['loss'], teacher, rnn, SMT_GRADS).items():
    out[f'smt.grad.{n}'] = g

  # DMT (forward_dmt, the published flags: detach_readout=True, detach_rnn=False = one-step gradients).
  dcfg = model.DMTConfig(T=x.shape[1], Td=HP['Td'], Tc=HP['Tc'], Tf=HP['Tf'], k=HP['k'], coef_dec=HP['dmt_coef_dec'],
                         coef_dyn=HP['dmt_coef_dyn'], coef_unif=HP['dmt_coef_unif'],
                         coef_readout=HP['dmt_coef_readout'], detach_readout=True, detach_rnn=False)
  o = model.forward_dmt(rnn, teacher, dict(x=x, y=y), dcfg)
  for k in ('z_rnn', 'z_enc', 'loss_readout_', 'loss_readout', 'loss_decoder_', 'loss_decoder', 'loss_decoder0',
            'loss_dyn_', 'loss_dyn', 'loss_unif', 'loss'):
    out[f'dmt.{k}'] = f32(o[k])
  for n, g in _grads(torch, o['loss'], teacher, rnn, DMT_GRADS).items():
    out[f'dmt.grad.{n}'] = g
  # Every RNN memory of the rollout (forward_dmt keeps every k-th only): r_0 = E(x[0:Tc]), r_s = U(r_{s-1}, x[Tc+s-1]).
  with torch.no_grad():
    z = teacher.encode(x[:, :HP['Tc']])
    mems = [z]
    for s in range(HP['Td']):
      z = rnn.rnn_update(z, x[:, [HP['Tc'] + s]])
      mems.append(z)
    out['dmt.rollout'] = f32(torch.stack(mems, dim=1))  # [B, Td+1, Z]
    # smtjax's DMT definitions, from the public modules: the encoder's memory at every k-th step including
    # step Td (forward_dmt stops at Td-k), and the readout's cross-entropy at every step s = 0..Td (forward_dmt
    # stops at Td-1): r_s predicts y[Tc+s-1].
    out['dmt.z_enc_all'] = f32(torch.stack([teacher.encode(x[:, s:s + HP['Tc']])
                                            for s in range(0, HP['Td'] + 1, HP['k'])], dim=1))
    out['dmt.readout_ce_all'] = f32(torch.stack([
        model.calc_cross_entropy_loss(rnn.rnn_readout(m), y[:, HP['Tc'] + s - 1]) for s, m in enumerate(mems)], dim=1))

  # BPTT (forward_bptt: zero initial memory, the RNN's own readout at every step, full backpropagation).
  Tb = HP['bptt_T']
  o = model.forward_bptt(rnn, dict(x=x[:, :Tb], y=y[:, :Tb]), model.BPTTConfig(T=Tb))
  for k in ('m_rnn', 'logits', 'loss_readout_', 'loss'):
    out[f'bptt.{k}'] = f32(o[k])
  for n, g in _grads(torch, o['loss'], teacher, rnn, BPTT_GRADS).items():
    out[f'bptt.grad.{n}'] = g

  # Teacher-forced reading (read_with_teacher_rnn): eval_len scored positions.
  o = model.read_with_teacher_rnn(rnn, teacher, x, HP['read_len'], HP['eval_len'])
  out['read.logits'] = f32(o['logits'])
  out['read.loss_eval_'] = f32(o['loss_eval_'])
  out['read.loss_eval'] = f32(o['loss_eval'])

  with torch.no_grad():  # the teacher's memory-only prediction (write_with_teacher's next-token logits)
    out['teacher_readout.logits'] = f32(teacher.teacher_readout(teacher.encode(x[:, :HP['Tc']])))
  return out


def optimizer_steps(torch, model, util, teacher, rnn, x, y) -> tuple[dict, list]:
  """train_smt.py's Main.init optimizer and Main.step training step (OPT['steps'] times, on one batch, float32)
  applied to copies of the networks: ({'opt.*': arrays}, the learning rate of each step)."""
  import copy
  rnn, teacher = copy.deepcopy(rnn), copy.deepcopy(teacher)
  T = HP['Tc'] + HP['Tf']
  scfg = model.SMTConfig(T=T, Tc=HP['Tc'], Tf=HP['Tf'], gamma=HP['gamma'], coef_dec=HP['smt_coef_dec'],
                         coef_dyn=HP['smt_coef_dyn'], coef_unif=HP['smt_coef_unif'], detach_rnn=False)
  assert scfg.hot_rnn and scfg.hot_teacher
  parameters = list(rnn.parameters()) + list(teacher.parameters())  # Main.init: hot_rnn, then hot_teacher
  opt = torch.optim.AdamW(parameters, lr=OPT['lr'], weight_decay=OPT['weight_decay'], betas=OPT['betas'])
  assert opt.defaults['eps'] == OPT['eps'] and not opt.defaults['amsgrad']
  batch = dict(x=x[:, :T], y=y[:, :T])
  out, lrs, losses, norms_rnn, norms_teacher = {}, [], [], [], []
  for itr in range(OPT['steps']):  # Main.step (its test pass is under no_grad: it changes nothing)
    lr = util.get_lr(itr, OPT['steps'], OPT['lr'], 'warmup_constant')
    for param_group in opt.param_groups:
      param_group['lr'] = lr
    lrs.append(lr)
    rnn.train()
    teacher.train()
    opt.zero_grad(set_to_none=True)
    o = model.forward_smt(rnn, teacher, batch, scfg)
    o['loss'].backward()  # grad_accum_steps = 1
    for n in OPT_PARAMS:  # the gradient before clipping
      out[f'opt.grad{itr + 1}.{n}'] = _param(teacher, rnn, n).grad.detach().numpy().astype(np.float32)
    norms_rnn.append(float(torch.nn.utils.clip_grad_norm_(rnn.parameters(), OPT['clip'])))
    norms_teacher.append(float(torch.nn.utils.clip_grad_norm_(teacher.parameters(), OPT['clip'])))
    opt.step()
    losses.append(float(o['loss']))
    for n in OPT_PARAMS:
      out[f'opt.step{itr + 1}.{n}'] = _param(teacher, rnn, n).detach().numpy().astype(np.float32)
  # The RNN's readout gets no gradient in SMT: AdamW skips it (no weight decay either).
  assert all(p.grad is None for p in [*rnn.decoder.parameters(), *rnn.to_logits.parameters()])
  out['opt.loss'] = np.array(losses, np.float32)
  out['opt.grad_norm_rnn'] = np.array(norms_rnn, np.float32)
  out['opt.grad_norm_teacher'] = np.array(norms_teacher, np.float32)
  return out, lrs


def autocast_report(torch, model, teacher, rnn, x, y):
  """Dtypes of the public SMT forward pass under bfloat16 autocast. CUDA's autocast (what train_smt.py uses)
  is not available here; CPU autocast casts the same ops used here (linear, matmul, attention) to bfloat16."""
  seen = {}

  def hook(name):
    def f(_mod, _inp, outp):
      seen.setdefault(name, outp.dtype if torch.is_tensor(outp) else type(outp).__name__)
    return f

  enc = teacher.encoder
  hooks = [enc.layers[0][1].to_out.register_forward_hook(hook('attention branch output (to_out)')),
           enc.layers[1][1].register_forward_hook(hook('feedforward branch output')),
           enc.layers[0][2].register_forward_hook(hook('residual stream after block 0 attention')),
           enc.layers[1][2].register_forward_hook(hook('residual stream after block 0 feedforward')),
           enc.layers[0][0][0].register_forward_hook(hook('pre-norm output (RMSNorm)')),
           enc.final_norm.register_forward_hook(hook('encoder final norm output')),
           teacher.to_logits.register_forward_hook(hook('teacher logits')),
           rnn.rnn.final_norm.register_forward_hook(hook('rnn final norm output'))]
  T = HP['Tc'] + HP['Tf']
  with torch.autocast('cpu', dtype=torch.bfloat16):
    o = model.forward_smt(rnn, teacher, dict(x=x[:, :T], y=y[:, :T]), model.SMTConfig(T=T, Tc=HP['Tc'], Tf=HP['Tf']))
  for h in hooks:
    h.remove()
  for k in ('m_now', 'm_next', 'm_next_pred', 'logits', 'loss_decoder', 'loss_dyn', 'loss_unif', 'loss'):
    seen[f'forward_smt {k}'] = o[k].dtype
  for k, v in seen.items():
    print(f'  {k:45s} {v}')


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument('--public-src', required=True, help="the public code's src/ folder (holds model.py)")
  ap.add_argument('--out', default=str(pathlib.Path(__file__).resolve().parents[2] / 'tests/golden/torch_tiny.npz'))
  ap.add_argument('--public-commit', default='', help='the commit of the public code (recorded in hparams; '
                  'default: `git rev-parse HEAD` in --public-src when it is a checkout)')
  ap.add_argument('--autocast-report', action='store_true')
  args = ap.parse_args()
  src = pathlib.Path(args.public_src).resolve()
  sys.path.insert(0, str(src))
  from importlib.metadata import version

  import model  # the public code
  import torch
  import util  # the public code (get_lr)

  torch.use_deterministic_algorithms(True)
  teacher, rnn = build(torch, model)
  x, y = batch(torch)
  out = run(torch, model, teacher, rnn, x, y)
  opt_out, opt_lrs = optimizer_steps(torch, model, util, teacher, rnn, x, y)
  out.update(opt_out)
  if args.autocast_report:
    autocast_report(torch, model, teacher, rnn, x, y)

  commit = args.public_commit
  if not commit:
    try:
      commit = subprocess.run(['git', '-C', str(src), 'rev-parse', 'HEAD'], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
      commit = ''
  hp = dict(HP, torch=torch.__version__, x_transformers=version('x-transformers'), public_commit=commit,
            opt_lr=OPT['lr'], opt_lr_steps=opt_lrs, opt_betas=list(OPT['betas']), opt_wd=OPT['weight_decay'],
            opt_eps=OPT['eps'], clip=OPT['clip'], opt_steps=OPT['steps'])
  arrays = {'hparams': np.array(json.dumps(hp, sort_keys=True)), 'x': x.numpy().astype(np.int32),
            'y': y.numpy().astype(np.int32)}
  for prefix, net in (('teacher', teacher), ('rnn', rnn)):
    for k, v in net.state_dict().items():
      if 'inv_freq' in k:  # rotary frequencies (a buffer, not a parameter): kept exact for the converter's check
        arrays[f'{prefix}.{k}'] = v.numpy().astype(np.float32)
        continue
      arrays[f'{prefix}.{k}'] = v.numpy().astype(np.float16)
      if v.is_floating_point():
        assert np.array_equal(arrays[f'{prefix}.{k}'].astype(np.float32), v.numpy()), k
  arrays.update(out)
  path = pathlib.Path(args.out)
  path.parent.mkdir(parents=True, exist_ok=True)
  np.savez_compressed(path, **arrays)
  print(f'wrote {path} ({path.stat().st_size} bytes, {len(arrays)} arrays)')
  for k in sorted(out):
    if out[k].size == 1:
      print(f'  {k:24s} {float(out[k]):.6f}')
  for k in ('opt.loss', 'opt.grad_norm_rnn', 'opt.grad_norm_teacher'):
    print(f'  {k:24s} {np.array2string(out[k], precision=6)}')


if __name__ == '__main__':
  main()
