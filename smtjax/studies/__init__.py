"""Studies built on the core, one module each (their commands are in experiments/):

- at equal wall clock, through `wallclock` (the runner: step times calibrated on one core, runs in parallel
  pinned processes, tuning on the validation split, scoring): `realdata` (SMT, SMT->DMT, drift-robust SMT and
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
