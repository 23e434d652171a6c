"""Recurrent cells by name, `config.model.cell`: the built-in ones (smtjax/cells.py) and any a user adds.

A cell is a Flax module built as `Cell(cfg)` from the frozen `config.ModelConfig` (its own options in
`cfg.cell_options`: `config.model.cell_options` as sorted (name, value) pairs) and called as
`cell(mem_BxKxD, x_B) -> mem_BxKxD`: the next memory after reading token x (x < 0 is padding; the caller
keeps the memory then). A cell whose memory evolves linearly, new = a * state + b with (a, b) a function
of x alone, may also define `coefficients(x_B) -> (a, b)` and `to_state` / `from_state`: BPTT can then
train it by a parallel scan over time (`bptt.parallel_scan`). Register your own from a config file or a notebook:

    from smtjax.registry import register_cell

    @register_cell('my_cell')
    class MyCell(nn.Module):
      cfg: ModelConfig
      def __call__(self, mem_BxKxD, x_B): ...

then `--config.model.cell=my_cell`. A process that loads a saved run of that cell must register it first
(import the module that defines it).
"""

from __future__ import annotations

from smtjax.errors import ConfigError

# Declared here, bound by smtjax/cells.py: validation knows these names before any network is built.
BUILT_IN_CELLS = ('transformer', 'gru', 'mlp', 'lstm', 'mingru', 'lru')
_CELLS: dict[str, type | None] = dict.fromkeys(BUILT_IN_CELLS)


_BUILT_IN_MODULE = 'smtjax.cells'


def register_cell(name: str):
  """Class decorator: `config.model.cell = name` builds this cell. A built-in name is bound only by
  smtjax/cells.py; any other name once, by one class (registering the same module's class again, as a
  re-run notebook cell does, replaces it)."""
  def add(cls):
    if name in BUILT_IN_CELLS and cls.__module__ != _BUILT_IN_MODULE:
      raise ConfigError(f'cell {name!r} is built in (smtjax/cells.py); register {cls.__module__}.'
                        f'{cls.__qualname__} under another name')
    known = _CELLS.get(name)
    if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
      raise ConfigError(f'cell {name!r} is already registered ({known.__module__}.{known.__qualname__})')
    _CELLS[name] = cls
    return cls
  return add


def cell_names() -> tuple[str, ...]:
  return tuple(_CELLS)


def cell_class(name: str) -> type:
  """The registered class of cell `name`; ConfigError naming the field and the known cells otherwise."""
  cls = _CELLS.get(name)
  if cls is None:
    raise ConfigError(f'config.model.cell: unknown cell {name!r}; known: {", ".join(cell_names())} '
                      '(register your own with smtjax.registry.register_cell)')
  return cls


LINEAR_BUILT_INS = ('mingru', 'lru')


def is_linear(cls) -> bool:
  """Whether a cell defines the linear-recurrence interface a parallel scan needs."""
  return all(hasattr(cls, m) for m in ('coefficients', 'to_state', 'from_state'))


def linear_cells() -> tuple[str, ...]:
  """The cells that can run as a parallel scan: the built-in linear ones and the registered classes that are."""
  return (*(n for n in LINEAR_BUILT_INS if n not in _CELLS), *(n for n, cls in _CELLS.items() if is_linear(cls)))
