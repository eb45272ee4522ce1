"""The README's configuration table is the settings object's, field for field."""

from __future__ import annotations

import re

from core.config import Settings, settings_table
from tests.support import ROOT


def test_readme_table_is_generated_from_the_settings() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"<!-- settings:start[^>]*-->\n(.*?)<!-- settings:end -->", readme, re.S)
    assert section is not None, "README.md lacks the settings markers"
    assert section.group(1).strip() == settings_table(), (
        "README's table is stale: run python scripts/readme_settings.py"
    )
    for name in Settings.model_fields:
        assert f"`EMBEDDING_{name.upper()}`" in section.group(1)


def test_model_roots_default_to_the_artifacts_directory(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("EMBEDDING_MODEL_ROOTS", raising=False)
    monkeypatch.setenv("EMBEDDING_ARTIFACTS_DIR", str(tmp_path / "shared"))
    assert Settings().model_roots == [tmp_path / "shared"]
    monkeypatch.setenv("EMBEDDING_MODEL_ROOTS", f'["{tmp_path}"]')
    assert Settings().model_roots == [tmp_path]
