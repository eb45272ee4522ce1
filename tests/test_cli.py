"""``embedctl`` as a user runs it: a real subprocess, real model, offline."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

EMBEDCTL = [sys.executable, "-m", "workers.cli"]
ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [*EMBEDCTL, *args],
        input=stdin.encode() if stdin else None,
        capture_output=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )


def test_help_is_fast_and_imports_no_torch():
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "workers.cli", "--help"],
        capture_output=True,
        cwd=ROOT,
        text=True,
    )
    took = time.perf_counter() - start
    assert out.returncode == 0 and "embed" in out.stdout
    assert " torch" not in out.stderr and "transformers" not in out.stderr
    assert took < 1.0, took


def test_embed_from_stdin_json():
    out = run("embed", "--model", "minilm", "--format", "json", stdin='"def f(): return 1"\n')
    assert out.returncode == 0, out.stderr
    vectors = json.loads(out.stdout)
    assert len(vectors) == 1 and len(vectors[0]) == 384
    assert abs(np.linalg.norm(vectors[0]) - 1) < 1e-5


def test_embed_npy_rows_in_input_order():
    texts = ["SELECT 1", "def f(): pass", "class A: pass"]
    out = run("embed", "--model", "minilm", "--format", "npy", *texts)
    assert out.returncode == 0, out.stderr
    matrix = np.load(io.BytesIO(out.stdout))
    assert matrix.dtype == np.float32 and matrix.shape == (3, 384)
    from embedding.encoder import Encoder

    local = Encoder.load("minilm", device="cpu").encode(texts)
    np.testing.assert_allclose(matrix, local, atol=1e-5)


def test_similarity_and_models():
    out = run("similarity", "def add(a, b): return a + b", "def sum2(x, y): return x + y")
    assert out.returncode == 0 and 0.5 < float(out.stdout) <= 1.0
    out = run("models")
    assert out.returncode == 0
    lines = {line.split()[0]: line for line in out.stdout.decode().splitlines()[1:]}
    assert set(lines) >= {"minilm", "qodo", "jina_v3", "combined"}
    assert " yes " in lines["minilm"] and " no " in lines["qodo"]


@pytest.mark.parametrize(
    ("args", "stdin", "needle"),
    [
        (("embed", "--model", "no-such-model", "x"), None, "unknown model"),
        (("embed", "--model", "qodo", "x"), None, "unavailable"),
        (("embed", "--model", "minilm"), "not json\n", "stdin line 1: not JSON"),
        (("embed", "--model", "minilm"), "42\n", "expected a JSON string"),
    ],
)
def test_errors_are_one_line_without_traceback(args, stdin, needle):
    out = run(*args, stdin=stdin)
    err = out.stderr.decode().strip().splitlines()
    assert out.returncode != 0
    assert "Traceback" not in out.stderr.decode()
    assert err[-1].startswith("embedctl: error:") and needle in err[-1]
    assert len([line for line in err if line.startswith("embedctl")]) == 1


def test_corrupt_model_folder_is_a_clear_error(tmp_path):
    import shutil

    from tests.tiny_models import MINILM_DIR

    folder = tmp_path / "broken"
    shutil.copytree(MINILM_DIR, folder)
    raw = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(raw[:1000])
    out = run("embed", "--model", str(folder), "x")
    assert out.returncode != 0 and "CorruptWeights" in out.stderr.decode()
    debug = run("--debug", "embed", "--model", str(folder), "x")
    assert "Traceback" in debug.stderr.decode()
