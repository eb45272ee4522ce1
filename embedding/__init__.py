"""The ML core: load models, encode, train, evaluate, validate. No Celery, SQLAlchemy or HTTP.

One sub-package per concern, each importing only those listed before it (and ``core``):

- :mod:`embedding.models`: what a model is and how it is loaded (specs, hub and local
  folders, safetensors weights, sentence-transformers layout, task adapters, pooling);
- :mod:`embedding.inference`: turning texts into vectors fast (the encoder, precision per
  device, length bucketing, the pass pool, attention kernels, torch threads);
- :mod:`embedding.data`: training examples on disk and in memory (JSONL rows, the stdlib
  code-search pairs, code pairs from any codebase in six languages, benchmark corpora);
- :mod:`embedding.evaluation`: how good a model is (retrieval metrics, the A/B compare,
  the speed benchmark);
- :mod:`embedding.training`: fine-tuning (the loop, its steps, losses, mining, checkpoints,
  hyper-parameters, export);
- :mod:`embedding.validation`: the seed guide's four checks, which run the trainer.

``workers/`` wires this package to queues and ``db/``. Heavy modules (torch, transformers)
are imported lazily by the modules that need them, so ``import embedding`` and
``embedctl --help`` stay fast. ``tests/test_layers.py`` holds the order above.
"""

__version__ = "0.1.0"
