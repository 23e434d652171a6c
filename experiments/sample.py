r"""Generate continuations of held-out prompts with a trained run (method.md §7).

  python -m experiments.sample --workdir=/tmp/run1 [--mode=rnn|teacher|rnn_only] [--temperature=1.0]
      [--seed=0] [--num=8] [--prompt_len=16] [--length=16] [--read_len=16]

Prompts are the first prompt_len tokens of held-out (test) sequences. mode 'rnn': the teacher encodes the
prompt and the RNN writes; 'teacher': teacher-only, re-encoding the last read_len tokens every step;
'rnn_only': the RNN reads the prompt from its initial memory and writes (--prompt_len=0: unconditional).
Writes WORKDIR/samples.png (image data) or WORKDIR/samples.txt and prints the path. The same flags give
identical output. Defaults come from config.sample.*.
"""


from absl import app, flags

from experiments import _cli
from smtjax import runs

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Run directory with config.json and checkpoints/.')
flags.DEFINE_enum('mode', 'rnn', list(runs.MODES), 'Who writes: rnn, teacher or rnn_only.')
flags.DEFINE_float('temperature', None, 'Sampling temperature; 0 = argmax (default config.sample.temperature).')
flags.DEFINE_integer('seed', None, 'Sampling seed (default config.sample.seed).')
flags.DEFINE_integer('num', None, 'Number of samples (default config.sample.num).')
flags.DEFINE_integer('prompt_len', None,
                     'Prompt tokens (default config.sample.prompt_len, else the evaluate read_len).')
flags.DEFINE_integer('length', None, 'Generated tokens (default config.sample.length, else the rest of the sequence).')
flags.DEFINE_integer('read_len', None, 'Teacher mode: window of tokens re-encoded each step.')
flags.DEFINE_string('out', None, 'Output path (default WORKDIR/samples.txt or samples.png).')
flags.mark_flags_as_required(['workdir'])


def main(argv):
  _cli.start(argv)
  _cli.require_workdir(FLAGS.workdir)
  with _cli.user_errors():
    path, out = runs.sample_workdir(FLAGS.workdir, FLAGS.mode, FLAGS.num, FLAGS.temperature, FLAGS.seed,
                                         FLAGS.prompt_len, FLAGS.length, FLAGS.read_len, FLAGS.out)
  n, length = out['tokens'].shape
  print(f'wrote {n} samples ({FLAGS.mode}, {out["prompt"].shape[1]} prompt + {length} generated tokens) to {path}')


if __name__ == '__main__':
  app.run(main)
