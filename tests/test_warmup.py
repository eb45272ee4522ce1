"""A worker pays its first-use imports as it starts (embedding.inference.warmup), not in the
first request; a warm-up that fails leaves the cost there and says why, never raises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _probe(code: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_warm_up_imports_every_registered_architecture_before_any_load():
    found = _probe(
        "import json, sys\n"
        "from embedding.inference.warmup import MODEL_MODULES, warm_up\n"
        "before = [m in sys.modules for m in MODEL_MODULES]\n"
        "spent = warm_up(device='cpu')\n"
        "print(json.dumps({'before': before, 'after': [m in sys.modules for m in MODEL_MODULES],"
        " 'spent': spent}))"
    )
    assert not any(found["before"]), "the probe must start cold"
    assert all(found["after"]), found
    assert found["spent"]["imports"] > 0 and found["spent"]["device"] == 0.0, found["spent"]


def test_a_failing_warm_up_never_raises_and_says_why(caplog):
    from embedding.inference import warmup

    original = warmup.MODEL_MODULES
    warmup.MODEL_MODULES = ("transformers.models.no_such_architecture.modeling",)
    try:
        with caplog.at_level("WARNING", logger=warmup.__name__):
            spent = warmup.warm_up(device="cpu")
    finally:
        warmup.MODEL_MODULES = original
    assert "imports" not in spent
    assert "warm-up stopped early (ModuleNotFoundError" in caplog.text
