"""Conversion of other implementations' checkpoints into smtjax parameters (`smtjax.interop.torch`: the public
PyTorch SMT code)."""
