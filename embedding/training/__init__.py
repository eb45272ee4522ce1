"""Fine-tuning: the loop and what it is built from.

:mod:`~embedding.training.loop` is the loop (``finetune``), readable top to bottom; beside
it, named: the run's settings and results (``config``), loading and optimizer set-up
(``setup``), one step (``steps``), what runs at each epoch's end (``epoch_hooks``),
checkpoints and the run fingerprint (``checkpoints``), best-epoch selection
(``epoch_selection``), the chunked training forward (``forward``), the export
(``export``), hard-negative mining (``mining``), the losses (``losses/``) and the table of
every hyper-parameter a user may set (``hyperparameters``). Imports every ``embedding``
package above except ``validation``.
"""
