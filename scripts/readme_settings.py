"""Write the configuration table of README.md from the settings object.

``core.config.settings_table()`` renders every ``EMBEDDING_*`` field with its default
and description; this puts it between the README's ``settings:start`` / ``settings:end``
markers. ``tests/test_readme_settings.py`` fails while the two differ.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.config import settings_table  # noqa: E402

MARKERS = re.compile(r"(<!-- settings:start[^>]*-->\n)(.*?)(<!-- settings:end -->)", re.S)


def main() -> int:
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    new, count = MARKERS.subn(lambda m: m.group(1) + settings_table() + "\n" + m.group(3), text)
    if count != 1:
        raise SystemExit("README.md: settings markers not found exactly once")
    readme.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
