"""How good and how fast a model is: retrieval metrics, the A/B compare, the speed benchmark.

:mod:`~embedding.evaluation.metrics` (MRR@10, recall@k, triplet accuracy),
:mod:`~embedding.evaluation.compare` (two models on the same pairs, with a paired
bootstrap) and :mod:`~embedding.evaluation.bench` (latency, throughput, a gradient step).
Imports the models, inference and data packages below it.
"""
