"""workers.reports.render: the console report names every criterion that failed; the JUnit XML has
one testcase per criterion, with failures, errors and skips where CI will look for them."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from workers.reports.render import render_junit, render_report


def _criterion(name: str, threshold: str, actual, passed: bool) -> dict:
    return {"name": name, "threshold": threshold, "actual": actual, "passed": passed}


SUMMARY = {
    "run_id": "r1",
    "status": "error",
    "verdict": "3 of 4 checks did not pass",
    "wall_time_s": 12.5,
    "checks": [
        {
            "name": "model_loading",
            "status": "passed",
            "duration_s": 1.0,
            "reason": None,
            "figures": {
                "minilm": {
                    "available": True,
                    "load_time_ms": 310.0,
                    "size_mb": 90.9,
                    "weights_present": True,
                    "tensor_count": 101,
                    "parameter_count": 22713216,
                    "source": "package",
                }
            },
            "criteria": [_criterion("minilm weights present", "true", True, True)],
        },
        {
            "name": "inference_quality",
            "status": "failed",
            "duration_s": 2.0,
            "reason": None,
            "figures": {"model": "minilm", "dims": 384, "norms": [1.0], "pairs": []},
            "criteria": [
                _criterion("dimension", "== 384", 384, True),
                _criterion("related above unrelated", "all pairs", 2, False),
                _criterion("unit norms", "|n - 1| < 1e-3", 0.2, False),
            ],
        },
        {
            "name": "convergence",
            "status": "error",
            "duration_s": 0.5,
            "reason": "RuntimeError: out of memory",
            "figures": {},
            "criteria": [],
        },
        {
            "name": "benchmark",
            "status": "unavailable",
            "duration_s": 0.0,
            "reason": "no GPU on this host",
            "figures": {},
            "criteria": [],
        },
    ],
}


def test_the_console_report_names_each_failed_criterion():
    text = render_report(SUMMARY)
    fail_lines = [line for line in text.splitlines() if line.strip().startswith("FAIL ")]
    assert len(fail_lines) == 2
    assert "inference_quality" in fail_lines[0] and "related above unrelated" in fail_lines[0]
    assert "(all pairs)" in fail_lines[0]
    assert "unit norms" in fail_lines[1] and "0.2" in fail_lines[1]
    assert "Inference quality: FAIL" in text
    assert (
        "Fine-tuning convergence: ERROR" in text and "reason: RuntimeError: out of memory" in text
    )
    assert "Performance benchmark: UNAVAILABLE" in text and "no GPU on this host" in text
    assert "minilm: 310 ms, 90.9 MB" in text
    assert "VERDICT: ERROR — 3 of 4 checks did not pass" in text
    assert "suite wall time: 12.5 s" in text


def test_the_junit_xml_has_a_case_per_criterion_and_counts_what_ci_reads():
    suite = ET.fromstring(render_junit(SUMMARY).encode())
    assert suite.tag == "testsuite" and suite.get("name") == "embedding_validation"
    cases = suite.findall("testcase")
    names = [(c.get("classname").rsplit(".", 1)[1], c.get("name")) for c in cases]
    assert names == [
        ("model_loading", "minilm weights present"),
        ("inference_quality", "dimension"),
        ("inference_quality", "related above unrelated"),
        ("inference_quality", "unit norms"),
        ("convergence", "convergence status"),
        ("benchmark", "benchmark status"),
    ]
    failures = {c.get("name"): c.find("failure") for c in cases if c.find("failure") is not None}
    assert set(failures) == {"related above unrelated", "unit norms"}
    assert failures["unit norms"].get("message") == "expected |n - 1| < 1e-3, got 0.2"
    [error] = [c for c in cases if c.find("error") is not None]
    assert error.find("error").get("message") == "RuntimeError: out of memory"
    [skipped] = [c for c in cases if c.find("skipped") is not None]
    assert skipped.get("name") == "benchmark status"
    assert (
        suite.get("tests"),
        suite.get("failures"),
        suite.get("errors"),
        suite.get("skipped"),
    ) == (
        "6",
        "2",
        "1",
        "1",
    )
    assert float(suite.get("time")) == 3.5
    # a check's time is split over its cases
    assert [float(c.get("time")) for c in cases[1:4]] == [0.667] * 3


def test_an_all_passed_run_has_no_failures():
    passed = {
        "status": "passed",
        "verdict": "all 1 checks passed",
        "checks": [SUMMARY["checks"][0]],
    }
    suite = ET.fromstring(render_junit(passed).encode())
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("1", "0", "0")
    text = render_report(passed)
    assert "FAIL " not in text and "VERDICT: PASSED" in text
