"""Shared test fixtures: tiny configs derived from the real ones, and the shared-data location."""

import inspect
import json
import os
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))

# The suite is bound by XLA:CPU compilation, not by running its tiny programs. XLA:CPU's MLIR fusion emitters
# take most of that time, so the suite compiles without them and with LLVM at -O0 (docs/benchmarks.md has
# the measured effect). Subprocess tests inherit these through XLA_FLAGS; SMTJAX_TEST_XLA_FLAGS='' restores
# XLA's defaults.
TEST_XLA_FLAGS = os.environ.setdefault(
    'SMTJAX_TEST_XLA_FLAGS',
    '--xla_cpu_use_fusion_emitters=false --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true')
if TEST_XLA_FLAGS not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()

import jax  # noqa: E402
from absl import logging  # noqa: E402

logging.set_verbosity(logging.WARNING)

# Many tests compile the same tiny programs: a persistent compilation cache (shared with the
# subprocess tests through the environment) cuts the suite's time several-fold.
CACHE_DIR = os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', str(ROOT / '.pytest_cache' / 'jax_cache'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')
jax.config.update('jax_compilation_cache_dir', CACHE_DIR)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


# Scheduling on the CI's two cores (pytest -n auto): the tests marked slow start first, so that no minute-long
# test is left for the end while the other worker idles; each test is its own unit of work, pulled by whichever
# worker is free, but a module whose one expensive module-scoped fixture serves all its tests runs on one
# worker (built once, not once per worker).
ONE_WORKER_MODULES = ('tests/test_export.py',)


def pytest_collection_modifyitems(items):
  items.sort(key=lambda item: item.get_closest_marker('slow') is None)  # stable: files keep their order


try:
  from xdist.scheduler import LoadScopeScheduling
except ImportError:  # no pytest-xdist: the suite runs in one process
  LoadScopeScheduling = None

if LoadScopeScheduling is not None:

  class _TestOrModuleScheduling(LoadScopeScheduling):
    def _split_scope(self, nodeid: str) -> str:
      module = nodeid.split('::', 1)[0]
      return module if module in ONE_WORKER_MODULES else nodeid

  def pytest_xdist_make_scheduler(config, log):
    """-n's default distribution ('load') as units of one test (or module): see ONE_WORKER_MODULES."""
    if config.getvalue('dist') == 'load':
      return _TestOrModuleScheduling(config, log)
    return None


def xla_flags(*extra: str) -> str:
  """XLA_FLAGS for a subprocess: the suite's compile flags plus `extra`."""
  return ' '.join([TEST_XLA_FLAGS, *extra]).strip()


def tiny_config(mode: str = 'parallel', cell: str = 'transformer'):
  """configs/retrieval.py:small shrunk to a few milliseconds per step."""
  from configs import retrieval
  c = retrieval.get_config('small')
  c.data.seq_len = 8
  c.smt.future = 8
  c.smt.context = 4
  c.smt.mode = mode
  c.model.cell = cell
  c.model.d_model = 16
  c.model.num_heads = 2
  c.model.num_mem_tokens = 2
  c.model.enc_depth = 1
  c.model.dec_depth = 1
  c.model.cell_depth = 1
  c.batch_size = 8
  # The rate and schedule the tests' step counts and thresholds were chosen for (small's are 1e-3 and cosine).
  c.optim.lr, c.optim.schedule = 3e-3, 'constant'
  c.num_steps = 8
  c.log_every = 1
  c.eval_every = 4
  c.checkpoint_every = 4
  c.num_eval_batches = 1
  c.progress_bar = False
  if mode == 'window':
    c.model.encoder_attention = 'bidirectional'
    c.smt.future = 4
  return c


def seed_calibration(out, methods, plan, seconds: float = 1 / 16, timed=()) -> None:
  """out/calibration.json holding every run of `methods` (stages and candidates) but the RunKeys in `timed` at
  `seconds` per step: a wall-clock study reads those step times from this cache instead of timing each config
  in a process of its own (the ceiling sweep's test and `timed` time them for real), so the test trains a
  known number of steps on any machine."""
  from smtjax.studies import runner, wallclock
  keys = set()
  for m in methods:
    stage = wallclock.stage_key(m)
    keys |= {runner.RunKey(m.name), stage} | {stage.tuned(name) for name, _ in wallclock.candidates(m, plan)}
  out.mkdir(parents=True, exist_ok=True)
  (out / 'calibration.json').write_text(json.dumps({str(k): seconds for k in keys - set(timed)}))


@pytest.fixture
def shared_data():
  """The shared datasets directory (env SMTJAX_SHARED_DATA, default ../shared/data beside the repo)."""
  path = pathlib.Path(os.environ.get('SMTJAX_SHARED_DATA', ROOT.parent / 'shared' / 'data'))
  if not path.is_dir():
    pytest.skip(f'shared data not found at {path} (set SMTJAX_SHARED_DATA)')
  return path


class JittedNetworks:
  """`Networks` with each method under jax.jit: tests call them on many shapes, and one compile per
  shape is far cheaper than dispatching every Flax op eagerly."""
  _STATIC = {'initial_memory': (1,)}

  def __init__(self, nets):
    self.nets = nets
    self._fns = {}

  def __getattr__(self, name):
    attr = getattr(self.nets, name)
    if not inspect.ismethod(attr) or name.startswith('_') or name in ('init', 'from_config'):
      return attr
    if name not in self._fns:
      self._fns[name] = jax.jit(attr, static_argnums=self._STATIC.get(name, ()))
    return self._fns[name]
