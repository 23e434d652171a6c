"""The package's architecture, checked statically: imports run one way (no cycles), no imports hide inside
functions, no library module switches matplotlib's backend, and every error type lives in smtjax.errors."""

import ast
import pathlib

from tests.conftest import ROOT

PACKAGE = ROOT / 'smtjax'

# The layers, lowest first: a module may import only modules of its own layer or a lower one.
LAYERS = [
    {'smtjax.errors', 'smtjax.plotting', 'smtjax.perf', 'smtjax.workdir', 'smtjax.logs', 'smtjax.registry'},
    {'smtjax.config', 'smtjax.variants', 'smtjax.data', 'smtjax.sharding', 'smtjax.metrics', 'smtjax.checkpoint',
     'smtjax.preemption'},
    {'smtjax.layers'},
    {'smtjax.models', 'smtjax.cells'},
    {'smtjax.losses', 'smtjax.windows'},
    {'smtjax.inference'},
    {'smtjax.smt', 'smtjax.dmt', 'smtjax.bptt', 'smtjax.reference'},
    {'smtjax.objectives', 'smtjax.optim'},
    {'smtjax.evaluation'},
    {'smtjax.train'},
    {'smtjax.runs', 'smtjax.interop', 'smtjax.benchmarks', 'smtjax.soak'},
    {'smtjax.studies'},
]


def _modules() -> dict[str, pathlib.Path]:
  out = {}
  for path in sorted(PACKAGE.rglob('*.py')):
    parts = path.relative_to(ROOT).with_suffix('').parts
    name = '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)
    out[name] = path
  return out


def _imports(path: pathlib.Path, modules) -> tuple[set[str], list[str]]:
  """(smtjax modules imported at module level, descriptions of imports inside functions)."""
  tree = ast.parse(path.read_text())
  top, nested = set(), []

  def targets(node):
    if isinstance(node, ast.Import):
      return [a.name for a in node.names]
    base = node.module or ''
    # `from pkg import sub` imports the submodule pkg.sub when there is one.
    return [f'{base}.{a.name}' if f'{base}.{a.name}' in modules else base for a in node.names]

  for node in ast.walk(tree):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      for inner in ast.walk(node):
        if isinstance(inner, (ast.Import, ast.ImportFrom)):
          nested.append(f'{path.name}:{inner.lineno} {", ".join(targets(inner))}')
  for node in tree.body:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      top.update(t for t in targets(node) if t.split('.')[0] == 'smtjax')
  return top, nested


def _graph():
  modules = _modules()
  return {name: _imports(path, modules)[0] & set(modules) for name, path in modules.items()}


def _layer(module: str) -> int:
  for i, group in enumerate(LAYERS):
    if any(module == g or module.startswith(g + '.') for g in group):
      return i
  raise AssertionError(f'{module} is in no layer of tests/test_architecture.py')


def _cycle(graph) -> str | None:
  """An import cycle of `graph` ({module: modules it imports}) as 'a -> b -> a', or None."""
  state: dict[str, int] = {}  # 1 = on the stack, 2 = done

  def visit(node, stack):
    state[node] = 1
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 1:
        return ' -> '.join(stack[stack.index(nxt):] + [node, nxt]) if nxt in stack else f'{node} -> {nxt}'
      if nxt not in state and (found := visit(nxt, stack + [node])):
        return found
    state[node] = 2
    return None

  return next((found for node in sorted(graph) if node not in state and (found := visit(node, []))), None)


def _upward(graph) -> list[str]:
  """Every import of `graph` from a module to one of a higher layer."""
  return [f'{m} (layer {_layer(m)}) imports {d} (layer {_layer(d)})'
          for m, deps in graph.items() if m != 'smtjax' for d in deps if d != 'smtjax' and _layer(d) > _layer(m)]


def test_no_import_cycles():
  cycle = _cycle(_graph())
  assert cycle is None, f'import cycle: {cycle}'


def test_imports_run_down_the_layers():
  bad = _upward(_graph())
  assert not bad, '\n'.join(bad)


# Optional heavy dependencies may be imported where they are used (importing TFDS takes seconds; torch is
# needed only to read the public code's torch files, and is not a dependency).
OPTIONAL_HEAVY = ('tensorflow_datasets', 'torch')


def test_no_imports_inside_functions():
  modules = _modules()
  nested = [n for path in modules.values() for n in _imports(path, modules)[1]
            if not n.split(' ', 1)[1].startswith(OPTIONAL_HEAVY)]
  assert not nested, 'imports inside functions:\n' + '\n'.join(nested)


def test_no_backend_switching_or_pyplot_in_the_library():
  bad = [str(p.relative_to(ROOT)) for p in PACKAGE.rglob('*.py')
         if any(s in p.read_text() for s in ('matplotlib.use(', 'matplotlib.pyplot', 'import pyplot'))]
  assert not bad, f'library modules using pyplot or switching the backend: {bad}'


def test_error_types_live_in_errors_module():
  bad = []
  for path in PACKAGE.rglob('*.py'):
    if path.name == 'errors.py':
      continue
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.ClassDef) and any(
          isinstance(b, ast.Name) and (b.id.endswith('Error') or b.id == 'Exception') for b in node.bases):
        bad.append(f'{path.relative_to(ROOT)}: class {node.name}')
  assert not bad, 'error types outside smtjax/errors.py:\n' + '\n'.join(bad)


def test_the_checks_can_fail(tmp_path):
  """Each check finds a planted violation: an import inside a function, a cycle, an upward import."""
  f = tmp_path / 'm.py'
  f.write_text('import os\n\ndef g():\n  import json\n  return json\n')
  assert _imports(f, {})[1] == ['m.py:4 json'] and not _imports(f, {})[0]
  assert _cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == 'a -> b -> c -> a'
  assert _cycle({'a': {'b'}, 'b': {'c'}, 'c': set()}) is None
  assert _upward({'smtjax.errors': {'smtjax.train'}}) == ['smtjax.errors (layer 0) imports smtjax.train (layer 9)']
  assert _upward({'smtjax.train': {'smtjax.errors'}}) == []


# Functions allowed over MAX_FUNCTION_LINES: lists of config fields.
LONG_ALLOWED = {'smtjax/config.py:default_config'}
MAX_FUNCTION_LINES = 60


def test_library_functions_fit_on_a_screen():
  """No library function over 60 lines (lists of config fields excepted): each reads in one sitting."""
  long = []
  for path in sorted(PACKAGE.rglob('*.py')):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        name = f'{path.relative_to(ROOT)}:{node.name}'
        if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES and name not in LONG_ALLOWED:
          long.append(f'{name} ({node.end_lineno - node.lineno + 1} lines)')
  assert not long, long
