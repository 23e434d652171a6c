"""Studies built on the core, one module each (their commands are in experiments/):

- `runner`: every study's runs (`Job`s) trained in parallel pinned processes or in this process, finished ones
  kept, and `ledger`: each finished run's record, so that a study continues on another machine;
- at equal wall clock, through `wallclock` (step times calibrated on one core, budgets as step counts, tuning on
  the validation split, scoring): `realdata` (SMT, SMT->DMT, drift-robust SMT and
  BPTT on real data), `linear_rnns` (SMT's nonlinear RNNs against time-parallel linear RNNs) and `crossover`
  (the length from which SMT overtakes tuned BPTT);
- at equal steps: `claims` (the paper's synthetic claims, each run to a plateau), `recipe` (arms x seeds),
  `ceiling` (where the RNN stays under its teacher, and which knob closes the gap), `compare` (SMT vs SMT->DMT
  vs BPTT across lengths and seeds) and `compression` (test loss against memory size x steps);
- of trained runs: `analysis` (gradient reach against distance, memory drift) and `geometry` (memory-space
  geometry);
- `stats`: means and 95% intervals over seeds.

Each study writes JSON, most also a markdown table, and figures (`smtjax.plotting`, or the study's own
`figure`) under an output directory."""
