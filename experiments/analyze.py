r"""Analyses of trained runs (smtjax/analysis.py documents exactly what is computed).

  python -m experiments.analyze --study=gradients --workdir=/tmp/run1 [--num_batches=1]
  python -m experiments.analyze --study=gradients --smt_workdir=/tmp/run1 --bptt_workdir=/tmp/run1_bptt --out=/tmp/cmp
  python -m experiments.analyze --study=drift --workdir=/tmp/run1_dmt --compare_workdir=/tmp/run1 [--read_len=16]
  python -m experiments.analyze --study=geometry --workdir=/tmp/mem2d [--num_sequences=128]

gradients: gradient norm of the last target's loss w.r.t. each input's embedding against its distance
T-1-t: the RNN rolled from its initial memory (BPTT loss) and, for a causal encoder, the SMT decoder loss
through the encoder's prefix memory -> gradients.json, gradients.png.
drift: one-step and rollout MSE to the teacher's memories against RNN steps n -> drift.json, drift.png.
geometry: teacher and RNN memories of every prefix of held-out sequences, coloured by task state (2-D/3-D
memories as they are, larger ones by PCA) -> geometry.json, memory_teacher.png, memory_rnn.png.
Files go to --out (default: the workdir, or --smt_workdir).
"""

from absl import app, flags

from experiments import _cli
from smtjax.studies import analysis, geometry

FLAGS = flags.FLAGS
flags.DEFINE_enum('study', None, ['gradients', 'drift', 'geometry'], 'Which analysis.')
flags.DEFINE_string('workdir', None, 'Run directory (config.json + checkpoints/).')
flags.DEFINE_string('smt_workdir', None, 'gradients: an SMT run to compare with --bptt_workdir.')
flags.DEFINE_string('bptt_workdir', None, 'gradients: a BPTT run to compare with --smt_workdir.')
flags.DEFINE_string('compare_workdir', None, 'drift: a second run drawn on the same plot (e.g. before DMT).')
flags.DEFINE_string('out', None, 'Output directory (default: the workdir).')
flags.DEFINE_integer('num_batches', 1, 'Held-out batches.')
flags.DEFINE_integer('chunk', 8, 'gradients: examples per BPTT gradient computation (memory bound).')
flags.DEFINE_integer('read_len', None, 'drift: tokens the teacher encodes (default from the config).')
flags.DEFINE_integer('num_steps', None, 'drift: RNN steps (default: the rest of the sequence).')
flags.DEFINE_integer('num_sequences', 128, 'geometry: held-out sequences drawn.')
flags.mark_flags_as_required(['study'])


def main(argv):
  _cli.start(argv)
  with _cli.user_errors():
    if FLAGS.study == 'gradients':
      if not (FLAGS.workdir or FLAGS.smt_workdir or FLAGS.bptt_workdir):
        raise app.UsageError('give --workdir, or --smt_workdir and --bptt_workdir')
      analysis.gradients_workdir(FLAGS.workdir, FLAGS.smt_workdir, FLAGS.bptt_workdir, FLAGS.out,
                                 FLAGS.num_batches, FLAGS.chunk)
      out = FLAGS.out or FLAGS.workdir or FLAGS.smt_workdir or FLAGS.bptt_workdir
      print(f'wrote {out}/gradients.json and {out}/gradients.png')
    elif FLAGS.study == 'geometry':
      if not FLAGS.workdir:
        raise app.UsageError('--study=geometry needs --workdir')
      r = geometry.geometry_workdir(FLAGS.workdir, FLAGS.out, FLAGS.num_sequences)
      for source, sep in r['sources'].items():
        print(f'{source}: {sep["num_states"]} states, nearest-state accuracy {sep["accuracy"]:.3f}, '
              f'within/between {sep["ratio"]:.3f} -> {sep["plot"]}')
      print(f'wrote {FLAGS.out or FLAGS.workdir}/geometry.json')
    else:
      if not FLAGS.workdir:
        raise app.UsageError('--study=drift needs --workdir')
      analysis.drift_workdir(FLAGS.workdir, FLAGS.compare_workdir, FLAGS.out, FLAGS.num_batches,
                             FLAGS.read_len, FLAGS.num_steps)
      out = FLAGS.out or FLAGS.workdir
      print(f'wrote {out}/drift.json and {out}/drift.png')


if __name__ == '__main__':
  app.run(main)
