"""Data: synthetic tasks and real datasets behind one interface.

A *source* maps (split, batch index, rows) to arrays, as a pure function of its seed, so a batch is
reproducible from its index alone and a restored run replays the same stream:

    source = make_source(config.data, seed)
    source.info                      # DataInfo: vocab_size, seq_len, kind, decode
    source.get_batch('train', index, row_start, row_stop)  # {'x','y'}: int32 [rows, T]; -1 = none

`pipeline.BatchIterator` walks a source for one process (its own rows of every global batch) with
prefetching and `get_state`/`set_state` for checkpoints.
"""

from smtjax.data.base import DataInfo, Source  # noqa: F401
from smtjax.data.registry import known_sources, make_source  # noqa: F401
from smtjax.errors import DataError  # noqa: F401
