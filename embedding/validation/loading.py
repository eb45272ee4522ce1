"""Check 1, model loading: each model loads fresh, fast enough, with its weights present."""

from __future__ import annotations

from embedding.validation.results import CheckResult, ResultBuilder, guarded

# Thresholds (the seed's criteria).
MAX_LOAD_S = 5.0
MIN_TENSORS = 100


@guarded
def check_model_loading(models: list[str]) -> CheckResult:
    """Load each model fresh: time, size, weights present, tensor count."""
    from embedding.inference.encoder import load_encoder
    from embedding.models.hub import ModelUnavailable

    check = ResultBuilder("model_loading")
    for name in models:
        try:
            encoder = load_encoder(name)
        except ModelUnavailable as exc:
            check.unavailable.append(str(exc))
            check.figures[name] = {"available": False, "reason": str(exc)}
            continue
        for report in encoder.load_reports:
            label = report.model
            check.figures[label] = report.to_dict()
            seconds = report.load_time_ms / 1000.0
            check.criterion(f"{label}: loads", "loads", True, True)
            check.criterion(
                f"{label}: load time",
                f"< {MAX_LOAD_S:g} s",
                round(seconds, 3),
                seconds < MAX_LOAD_S,
            )
            check.criterion(
                f"{label}: weights present", "true", report.weights_present, report.weights_present
            )
            check.criterion(
                f"{label}: tensors",
                f">= {MIN_TENSORS}",
                report.tensor_count,
                report.tensor_count >= MIN_TENSORS,
            )
    return check.result()
