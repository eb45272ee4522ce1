"""API keys and the bind rule, without a server: what `embedctl serve` refuses."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from api.security import check_bind, configured_keys, is_loopback, key_is_valid
from core.config import Settings
from tests.support import ROOT


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.1.2.3", False),
        ("example.com", False),
    ],
)
def test_loopback_hosts(host, loopback):
    assert is_loopback(host) is loopback


def test_no_keys_means_loopback_only():
    open_settings = Settings(api_keys="")
    check_bind("127.0.0.1", open_settings)
    with pytest.raises(PermissionError, match="EMBEDDING_API_KEYS"):
        check_bind("0.0.0.0", open_settings)
    check_bind("0.0.0.0", Settings(api_keys="k1"))


def test_keys_are_split_and_compared_exactly():
    keys = configured_keys(Settings(api_keys=" k1, ,k2 "))
    assert keys == ["k1", "k2"]
    assert key_is_valid("k2", keys) and not key_is_valid("k", keys)
    assert not key_is_valid("k1 ", keys) and not key_is_valid("", keys)


def test_serve_refuses_a_public_bind_without_keys():
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDDING_")}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run(
        [sys.executable, "-m", "workers.cli", "serve", "--host", "0.0.0.0", "--port", "1"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1
    assert "refusing to bind to 0.0.0.0" in out.stderr and "Traceback" not in out.stderr
