r"""Score a trained run on held-out data (method.md §7): teacher-forced RNN reading, teacher, RNN-only.

  python -m experiments.evaluate --workdir=/tmp/run1 [--num_batches=8] [--read_len=16] [--eval_len=16]
  python -m experiments.evaluate --workdir=/tmp/run1 --seq_len=96   # length generalization -> eval_T96.json

The teacher encodes the first read_len tokens of each held-out sequence, the RNN then reads the following
true tokens, and the memories r_0..r_{eval_len-1} each score the next target (position j = RNN steps taken;
the public code's loss_eval positions).
Writes WORKDIR/eval.json (losses in nats per target token, *_bits = nats / ln 2, accuracies, the RNN loss
per rollout position) and WORKDIR/eval_loss_by_position.png. Defaults come from config.evaluate.* (read_len:
smt.context for window-mode runs, else T // 2; eval_len: to the end of the sequence). --seq_len scores
held-out sequences of another length than the run was trained on (synthetic tasks generate any length):
the RNN reads the whole sequence from its initial memory, a causal teacher scores every prefix memory.
"""

import math

from absl import app, flags
from etils import epath

from experiments import _cli
from smtjax import runs

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Run directory with config.json and checkpoints/.')
flags.DEFINE_integer('num_batches', None, 'Held-out batches to score (default config.evaluate.num_batches).')
flags.DEFINE_integer('read_len', None, 'Tokens the teacher encodes before the RNN takes over.')
flags.DEFINE_integer('eval_len', None, 'Rollout positions scored (0..eval_len-1; read_len + eval_len <= T + 1).')
flags.DEFINE_integer('teacher_chunk', None, 'Bidirectional teachers: encode the windows of this many time '
                     'positions per call (0 = all in one call; default: about 2^19 window tokens per call).')
flags.DEFINE_integer('seq_len', None, 'Score sequences of this length (default: the training length); '
                     'writes eval_T<seq_len>.json.')
flags.mark_flags_as_required(['workdir'])


def main(argv):
  _cli.start(argv)
  _cli.require_workdir(FLAGS.workdir)
  with _cli.user_errors():  # bad lengths or config values, unreadable checkpoints
    r = runs.evaluate_workdir(FLAGS.workdir, FLAGS.num_batches, FLAGS.read_len, FLAGS.eval_len,
                                   FLAGS.teacher_chunk, seq_len=FLAGS.seq_len)

  def f(v):
    return 'n/a' if v is None or not math.isfinite(v) else f'{v:.4f}'

  print(f'{r["num_sequences"]} held-out sequences of length {r["seq_len"]} (trained at {r["trained_seq_len"]}), '
        f'read_len={r["read_len"]}, eval_len={r["eval_len"]} (nats/token):')
  for name in ('rnn', 'teacher', 'rnn_only'):
    print(f'  {name:9s} loss {f(r[name + "_loss"])} ({f(r[name + "_loss_bits"])} bits)  '
          f'accuracy {f(r[name + "_accuracy"])}')
  name = 'eval.json' if r['seq_len'] == r['trained_seq_len'] else f'eval_T{r["seq_len"]}.json'
  print(f'wrote {epath.Path(FLAGS.workdir) / name} and the loss-by-position plot beside it')


if __name__ == '__main__':
  app.run(main)
