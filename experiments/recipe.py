r"""Where SMT's teacher spends its steps: arms x seeds at equal steps (smtjax/studies/recipe.py).

  python -m experiments.recipe --config=configs/retrieval.py:small --seeds=0,1,2,3,4 --steps=1000 \
      --arms='base' --arms='dec4:smt.num_decoder_samples=4,optim.lr=1e-3' \
      --arms='transformer:method="transformer"' --out=/tmp/recipe

Each --arms is NAME or NAME:field=value,field=value (overrides of --config; short_len=L,short_steps=S: a
curriculum, S steps at length L first). Runs go to OUT/<arm>/seed<s>, two at a time by default, each pinned to
its own core (--lanes); a rerun reuses finished runs, and every finished run is recorded in --ledger (default
docs/results/runs/recipe.jsonl, committed), whose runs are not trained again (--report: train nothing). Writes
OUT/recipe.{json,md,png}.
"""

from absl import flags
from etils import epath

from experiments import _cli
from smtjax.studies import recipe

FLAGS = flags.FLAGS
_cli.define_config('Base config file (e.g. configs/retrieval.py:small).')
flags.DEFINE_multi_string('arms', ['base'], "Arms: NAME or 'NAME:field=value,field=value'.")
flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds of every arm.')
flags.DEFINE_integer('steps', None, "Training steps per run (default: the config's num_steps).")
flags.DEFINE_integer('evals', 10, 'Evaluations per run (on the validation split).')
_cli.define_study_flags('recipe')
flags.DEFINE_string('title', 'SMT training recipe', 'Title of the table.')
flags.DEFINE_string('ledger', 'docs/results/runs/recipe.jsonl', "Results ledger: finished runs' records ('': none).")
flags.DEFINE_bool('report', False, 'Train nothing: the table from the ledger (and finished runs under --out) alone.')
flags.mark_flags_as_required(['config'])


def main(argv):
  _cli.start(argv)
  with _cli.user_errors():
    arms = [recipe.parse_arm(a) for a in FLAGS.arms]
    recipe.run_study(FLAGS.config, arms, [int(s) for s in FLAGS.seeds], FLAGS.steps or FLAGS.config.num_steps,
                     FLAGS.evals, FLAGS.out, FLAGS.lanes, FLAGS.title, FLAGS.ledger or None, FLAGS.report)
  print((epath.Path(FLAGS.out) / 'recipe.md').read_text())


if __name__ == '__main__':
  _cli.run(main)
