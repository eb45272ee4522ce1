"""The ML core: specs, loading, encoding, losses, training, evaluation, benchmarks, validation.

This package never imports Celery or SQLAlchemy; ``workers/`` wires it to queues and ``db/``.
Heavy modules (torch, transformers) are imported lazily by the modules that need them, so
``import embedding`` and ``embedctl --help`` stay fast.
"""

__version__ = "0.1.0"
