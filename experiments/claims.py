r"""The paper's synthetic claims at equal optimizer steps and batch, every method tuned alike and run to a plateau.

  python -m experiments.claims --config=configs/stack.py --lengths=64 --seeds=3 --smt_steps=6000 \
      --dmt_steps=1200 --tune_steps=1000 [--lrs=3e-4,1e-3,3e-3] [--cells=transformer,gru] \
      [--drifts=plain,roll4] [--evals=12] [--lanes=2] [--tune_only] [--out=workdirs/claims] \
      [--config.model.d_model=128 ...]

SMT, SMT->DMT, BPTT (SMT + DMT steps) and SMT->BPTT (BPTT fine-tuning of SMT's RNN) on the config's task at
each length: each tuned on the validation split over the same grid, then trained for every seed; the table
has a same-cell row (the grid's first cell) and a best-cell row, each cell with its test accuracy (mean and 95%
interval), its last-quarter change and verdict (plateau, not converged, teacher not converged), seconds per
update and sequential depth. A curriculum in the config (--config.curriculum.length=16
--config.curriculum.steps=1000) is a first stage of SMT and BPTT alike, outside their counted steps; the
fine-tuning stages start from the SMT run. --tune_steps=0 skips tuning (the first value of each grid axis). Writes
OUT/claims_TASK_T<T>.{json,md,png} (with --tune_only: the grid's scores and curves only, in
OUT/claims_TASK_T<T>_tuning.{json,md,png}); runs go to OUT/TASK/T<length>/ and a rerun skips finished ones.

Every finished run is recorded in --ledger (default docs/results/runs/claims.jsonl, committed): a study started
anew, on any machine, trains only the runs the ledger lacks, and --report rebuilds the tables and figures from
the ledger alone, training nothing. See smtjax/studies/claims.py and smtjax/studies/ledger.py.
"""

from absl import flags

from experiments import _cli
from smtjax.data import synthetic
from smtjax.studies import claims

FLAGS = flags.FLAGS
_cli.define_config('Config file and variant (parallel SMT, e.g. configs/stack.py).')
flags.DEFINE_list('lengths', None, "Lengths (default: the config's; keys_values: numbers of pairs).")
_cli.define_study_flags('claims')
flags.DEFINE_integer('seeds', 3, 'Seeds (config.seed + 0..seeds-1).')
flags.DEFINE_integer('smt_steps', None, "SMT steps (default: the config's num_steps).")
flags.DEFINE_integer('dmt_steps', None, 'DMT and SMT->BPTT fine-tuning steps (default: SMT steps // 5).')
flags.DEFINE_integer('tune_steps', 1000, 'Steps per SMT candidate while tuning (0: no tuning).')
flags.DEFINE_list('lrs', ['3e-4', '1e-3', '3e-3'], 'Learning rates of the grid.')
flags.DEFINE_list('cells', ['transformer', 'gru'], 'Cells of the grid; the first is the same-cell row.')
flags.DEFINE_list('drifts', ['plain', 'roll4'], "SMT's drift-robust settings of the grid.")
flags.DEFINE_integer('evals', 12, 'Validation evaluations per run (learning curves, plateau).')
flags.DEFINE_integer('num_eval_batches', 32, 'Batches per evaluation.')
flags.DEFINE_float('plateau', 0.01, 'A run has plateaued when its last-quarter change is below this.')
flags.DEFINE_bool('tune_only', False, 'Stop after tuning: OUT/claims_TASK_T<T>_tuning.{json,md,png}.')
flags.DEFINE_string('ledger', 'docs/results/runs/claims.jsonl', "Results ledger: finished runs' records ('': none).")
flags.DEFINE_bool('report', False, 'Train nothing: the tables from the ledger (and finished runs under --out) alone.')
flags.mark_flags_as_required(['config'])


def main(argv):
  _cli.start(argv)
  c = FLAGS.config
  steps = FLAGS.smt_steps or c.num_steps
  plan = claims.Plan(smt_steps=steps, dmt_steps=FLAGS.dmt_steps or max(1, steps // 5),
                     seeds=tuple(int(c.seed) + i for i in range(FLAGS.seeds)), tune_steps=FLAGS.tune_steps,
                     lrs=tuple(float(x) for x in FLAGS.lrs), cells=tuple(FLAGS.cells), drifts=tuple(FLAGS.drifts),
                     evals=FLAGS.evals, num_eval_batches=FLAGS.num_eval_batches, plateau=FLAGS.plateau,
                     lanes=FLAGS.lanes, tune_only=FLAGS.tune_only, report=FLAGS.report)
  lengths = FLAGS.lengths or [synthetic.swept_length(c.data)]
  with _cli.user_errors():
    results = claims.run_claims(c, lengths, plan, FLAGS.out, ledger=FLAGS.ledger or None)
  for r in results.values():
    if FLAGS.tune_only:
      print(claims.write_tuning_table(r, f'{FLAGS.out}/claims_{r["task"]}_T{r["length"]}_tuning.md'))
    else:
      print(claims.write_table(r, f'{FLAGS.out}/claims_{r["task"]}_T{r["length"]}.md'))


if __name__ == '__main__':
  _cli.run(main)
