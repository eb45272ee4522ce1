"""Texts to vectors, fast: the encoder and what makes it fast on each device.

:mod:`~embedding.inference.encoder` is the entry point; beside it the precision chosen per
device, token budgets per device, length bucketing of passes, the pass pool that overlaps
tokenizing with the forward, the attention kernels and the torch thread settings. Imports
``embedding.models`` (and ``core``).
"""
