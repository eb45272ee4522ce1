"""The Celery face of the system, and the rooms behind it, by concern.

Top level: the Celery app and its queues (``app``), the task definitions, thin glue
(``tasks``), the JSON payload schemas (``schemas``), the Python client other services use
(``client``) and the per-pool torch threads (``pool_threads``); ``cli/`` is ``embedctl``.
Behind them:

- :mod:`workers.jobs`: job life cycles (fine-tune, evaluation, validation run, dataset
  build), the checks before a submit, idempotency and the outbox;
- :mod:`workers.serving`: embedding requests (the service, micro-batching, the embedding
  cache, batch files, the model cache, model names);
- :mod:`workers.lifeline`: what keeps jobs alive through failures (the periodic duties,
  leases, database retries, worker presence and checks, warm shutdown);
- :mod:`workers.reports`: what operators and CI read (reports, the jobs page, benchmark
  records).

``workers`` imports ``db``, ``embedding`` and ``core``; never ``api``.
"""
