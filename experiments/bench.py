r"""Times the compiled train step of a config: compilation excluded, median of repeats; FLOPs, TFLOP/s, MFU
and the compiled program's memory.

  python -m experiments.bench --config=configs/tinystories.py:small
  python -m experiments.bench --config=configs/retrieval.py --config.data.seq_len=256 --compare_modes
  python -m experiments.bench --preset=paper_smt        # the published TinyStories sizes (GPU-sized)
  python -m experiments.bench --preset=paper_dmt
  python -m experiments.bench --preset=paper_bptt       # BPTT vs parallel SMT at T=1024
  python -m experiments.bench --memory_table            # peak memory of parallel SMT, T = 256 .. 8192
  python -m experiments.bench --roofline=h200           # the lowest possible step time of each preset
  python -m experiments.bench --preset=gpu_check        # one table for a short GPU lease (<= 8 minutes)
  python -m experiments.bench --length_table            # step time against T: SMT, window SMT, BPTT
  python -m experiments.bench --regression              # the step-time regression guard (a few minutes)

Prints step time, sequences/s, tokens/s, memory transitions trained per second (window mode: one per
sequence; parallel mode: num_transitions, or T, per sequence), FLOPs per step (XLA's cost analysis; scans
counted by trip count, see smtjax.perf), TFLOP/s and MFU against the device's peak bf16 throughput (none
on an unknown device such as a CPU). With --compare_modes, runs the config in both SMT modes at the same
model, batch and length and prints the ratio. --synthetic times on random tokens (no dataset needed);
the presets always do. --preset_scale=tiny shrinks a preset to a few milliseconds (tests).
"""

import jax
from absl import app, flags, logging

from experiments import _cli  # noqa: F401 -- JAX options as flags (--jax_log_compiles)
from smtjax import benchmarks, perf

FLAGS = flags.FLAGS
_cli.define_config('Config file (with optional :variant).')
flags.DEFINE_integer('steps', 10, 'Timed steps per repeat.')
flags.DEFINE_integer('repeats', 3, 'Repeats; the median is reported (and the min).')
flags.DEFINE_bool('compare_modes', False, 'Time window and parallel SMT at the same size.')
flags.DEFINE_bool('synthetic', False, 'Random tokens instead of the config\'s data source.')
flags.DEFINE_enum('preset', '', ['', 'paper_smt', 'paper_dmt', 'paper_bptt', 'gpu_check'],
                  'A published-size benchmark; gpu_check: all of them in one table, within 8 minutes on one GPU.')
flags.DEFINE_enum('roofline', '', ['', *perf.ROOFLINE_DEVICES], 'Print the roofline floor of every preset on this '
                  'device (from the step\'s FLOPs and bytes; traces only, runs nothing).')
flags.DEFINE_enum('preset_scale', 'paper', ['paper', 'tiny'], 'tiny: a preset or the memory table shrunk to '
                  'CPU test size.')
flags.DEFINE_bool('memory_table', False, 'Peak compiled memory of the parallel-SMT train step over --lengths '
                  '(compiles only, runs nothing).')
flags.DEFINE_list('lengths', ['256', '512', '1024', '2048', '4096', '8192'], '--memory_table and --length_table '
                  '(default there: 64,256,1024,4096): sequence lengths.')
flags.DEFINE_integer('batch', 8, '--memory_table: batch size.')
flags.DEFINE_integer('prefix_chunk', 32, '--memory_table: model.prefix_chunk of the chunked column.')
flags.DEFINE_integer('dense_up_to', 2048, '--memory_table: also compile the unchunked step up to this T.')
flags.DEFINE_bool('remat', True, '--memory_table: model.remat.')
flags.DEFINE_bool('length_table', False, 'Step time against T (--lengths) of parallel SMT, window SMT and BPTT at '
                  'the retrieval small size and the real-data cpu size (--sizes).')
flags.DEFINE_list('sizes', ['retrieval', 'cpu'], '--length_table: retrieval (configs/retrieval.py:small) and/or cpu '
                  '(configs/tinystories.py:cpu).')
flags.DEFINE_float('max_gib', 16.0, '--length_table: a step whose compiled program needs more memory is not run.')
flags.DEFINE_float('cell_seconds', 20.0, '--length_table: timing budget per step and length (at least 2 steps).')
flags.DEFINE_bool('regression', False, 'Time window SMT, parallel SMT, DMT and BPTT at the public architecture and '
                  'the cpu size, each over a matrix-product rate measured beside it, against docs/benchmarks.md.')
flags.DEFINE_string('record', 'docs/benchmarks.md', '--regression: the file holding the recorded figures.')
flags.DEFINE_float('tolerance', 0.20, '--regression: a step slower than its record by more than this is named.')
flags.DEFINE_list('only', [], '--regression: only the steps whose names contain one of these (e.g. cpu,DMT).')
flags.DEFINE_integer('band', 64, '--length_table: model.attn_window of the windowed-encoder column.')


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  dev = jax.devices()[0]
  name, peak = perf.peak_flops(dev)
  print(f'devices: {jax.device_count()} x {dev.device_kind} (peak bf16: '
        f'{f"{peak / 1e12:.0f} TFLOP/s" if peak else "unknown, no MFU"})')
  if FLAGS.roofline:
    benchmarks.roofline_table(FLAGS.roofline, FLAGS.preset_scale)
    return
  if FLAGS.regression:
    result = benchmarks.regression(FLAGS.record, FLAGS.tolerance, FLAGS.preset_scale, only=tuple(FLAGS.only))
    raise SystemExit(1 if result['slower'] else 0)
  if FLAGS.preset == 'gpu_check':
    benchmarks.gpu_check(FLAGS.preset_scale)
    return
  if FLAGS.length_table:
    benchmarks.length_table(FLAGS.sizes, FLAGS.lengths if FLAGS['lengths'].present else [64, 256, 1024, 4096],
                            FLAGS.band, FLAGS.max_gib, FLAGS.cell_seconds, FLAGS.preset_scale)
    return
  if FLAGS.memory_table:
    benchmarks.memory_table([int(t) for t in FLAGS.lengths], FLAGS.batch, FLAGS.prefix_chunk, FLAGS.remat,
                            FLAGS.dense_up_to, FLAGS.preset_scale)
    return
  if FLAGS.preset:
    benchmarks.run_preset(FLAGS.preset, FLAGS.preset_scale, FLAGS.steps, FLAGS.repeats)
    return
  config = FLAGS.config
  if config is None:
    raise app.UsageError('give --config, --preset or --memory_table')
  print(benchmarks.describe(config))
  if FLAGS.compare_modes:
    benchmarks.compare_modes(config, FLAGS.steps, FLAGS.repeats, FLAGS.synthetic)
  else:
    benchmarks.print_result(config.smt.mode,
                            benchmarks.time_train_step(config, FLAGS.steps, FLAGS.repeats, FLAGS.synthetic))


if __name__ == '__main__':
  _cli.run(main)
