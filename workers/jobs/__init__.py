"""Job life cycles: each kind of long work from submitted to a final, recorded state.

Fine-tune jobs (``finetune_job``), A/B evaluations (``evaluation_run``), validation runs
(``validation_run``) and dataset builds (``dataset_build``), with what they share: the
checks a submit passes (``submit_checks``), idempotency keys (``idempotency``) and the
outbox that hands recorded work to the broker (``outbox``). Imports ``db``, ``embedding``,
``core`` and ``workers.lifeline``/``workers.serving`` helpers; never the Celery tasks.
"""
