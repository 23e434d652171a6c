"""The training objective of each method, all with one signature:

    objective(config)(nets, params, batch, rng, config) -> (total loss, metrics)

SMT (smtjax/smt.py), DMT fine-tuning (smtjax/dmt.py), the BPTT baseline (smtjax/bptt.py) and the plain-Transformer
reference (smtjax/reference.py)."""

from __future__ import annotations

from collections.abc import Callable

from smtjax import bptt, dmt, reference, smt

OBJECTIVES: dict[str, Callable] = {'smt': smt.smt_losses, 'dmt': dmt.dmt_losses, 'bptt': bptt.bptt_losses,
                                 'transformer': reference.reference_losses}


def objective(config) -> Callable:
  """The loss function of config.method."""
  return OBJECTIVES[config.method]
