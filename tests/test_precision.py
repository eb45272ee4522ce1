"""The default precision is bf16 only where this machine runs bf16 faster; asked-for is kept."""

from __future__ import annotations

import math
import time

import pytest

from embedding.inference.encoder import Encoder
from embedding.inference.precision import (
    MIN_SPEEDUP,
    bf16_speedup,
    bf16_supported,
    resolve_precision,
)


def test_the_speedup_is_measured_once_a_process():
    first = bf16_speedup("cpu")
    if not bf16_supported("cpu"):
        assert first == 0.0
        return
    assert math.isfinite(first) and first > 0
    started = time.perf_counter()
    assert bf16_speedup("cpu") == first  # the same figure, not a second measurement
    assert time.perf_counter() - started < 0.005


def test_fp32_and_fp16_requests_pass_through():
    assert resolve_precision("fp32", "bf16", True, "cpu") == "fp32"
    assert resolve_precision(None, "fp32", True, "cpu") == "fp32"
    assert resolve_precision("fp16", "fp32", True, "cpu") == "fp16"


def test_a_model_that_forbids_bf16_gets_fp32_even_when_asked():
    assert resolve_precision("bf16", "bf16", False, "cpu") == "fp32"
    assert resolve_precision(None, "bf16", False, "cpu") == "fp32"


def test_the_default_follows_the_measurement_and_a_request_is_honoured():
    if not bf16_supported("cpu"):
        pytest.skip("this CPU has no bf16 at all")
    fast = bf16_speedup("cpu") >= MIN_SPEEDUP
    assert resolve_precision(None, "bf16", True, "cpu") == ("bf16" if fast else "fp32")
    assert resolve_precision("bf16", "bf16", True, "cpu") == "bf16"


def test_a_loaded_model_reports_the_precision_it_runs_in():
    default = Encoder.load("minilm", device="cpu")
    expected = resolve_precision(None, default.spec.default_precision, True, "cpu")
    assert default.precision == expected == default.load_reports[0].precision
    if bf16_supported("cpu"):
        asked = Encoder.load("minilm", device="cpu", precision="bf16")
        assert asked.precision == "bf16"
        assert asked._inference_model() is not asked.model  # it really runs the bf16 twin
