"""The validation suite: four checks of a model against the seed guide's pass criteria.

Each check returns a :class:`CheckResult` and never raises for a failed criterion
(:mod:`embedding.validation.results`); a model that cannot be had is ``unavailable`` with
the reason, never mocked, never passed. One module per check, each with its thresholds and,
for the training checks, the probe that measures it:

* :mod:`~embedding.validation.loading`: load time, weights present, tensor count;
* :mod:`~embedding.validation.quality`: shape, norms, similarity, reproducibility, edge cases;
* :mod:`~embedding.validation.convergence`: the seed's triplets train, loss falls every epoch;
* :mod:`~embedding.validation.benchmark`: latency, throughput, a real gradient step.

Importing this package loads neither torch nor transformers (the CLI reads ``CHECK_NAMES``):
each check imports the ML code it needs when it runs.
"""

from embedding.validation.benchmark import check_benchmark
from embedding.validation.convergence import check_convergence
from embedding.validation.loading import check_model_loading
from embedding.validation.quality import check_inference_quality
from embedding.validation.results import CheckResult, Criterion

# The suite, in the order the chord runs and reports it (the check task names follow these).
CHECK_NAMES = ("model_loading", "inference_quality", "convergence", "benchmark")

__all__ = [
    "CHECK_NAMES",
    "CheckResult",
    "Criterion",
    "check_benchmark",
    "check_convergence",
    "check_inference_quality",
    "check_model_loading",
]
