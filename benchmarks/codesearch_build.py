"""How fast ``embedctl data codesearch`` builds pairs from a large checkout: files/s.

It assembles a folder of ``--files`` (default 10,000) real source files that the walk
accepts, copied from what this machine has installed: the virtualenv's packages (Python,
and the JavaScript some ship), npm's own packages under ``/usr/lib/node_modules``
(JavaScript), and Debian's Go and Rust sources (``/usr/share/gocode``,
``/usr/share/cargo/registry``) where present. Each package goes into a folder of its own,
so nothing of it is re-skipped as vendored. Then it times ``build_code_pairs`` on the folder
(the walk, reading, parsing, extracting, deduplication and the split; the copy is not timed,
and the files are in the page cache by then), and prints files/s, pairs per language and
the report's skip and drop counts.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/codesearch_build.py [--files 10000] [--folder F]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from embedding.data.code_pairs import build_code_pairs
from embedding.data.code_pairs.sources import Source, walk


def origins() -> list[Path]:
    """Package folders to copy source files from, Python first, then the other languages."""
    found: list[Path] = []
    site = Path(sysconfig.get_paths()["purelib"])
    found += sorted(p for p in site.iterdir() if p.is_dir() and not p.name.endswith("-info"))
    for top in (Path("/usr/lib/node_modules"), Path("/usr/local/lib/node_modules")):
        if top.is_dir():
            for package in sorted(top.iterdir()):
                found.append(package)
                nested = package / "node_modules"
                if nested.is_dir():
                    found += sorted(p for p in nested.iterdir() if p.is_dir())
    for top in (Path("/usr/share/gocode/src"), Path("/usr/share/cargo/registry")):
        if top.is_dir():
            found += sorted(p for p in top.iterdir() if p.is_dir())
    return found


def assemble(dest: Path, limit: int) -> Counter[str]:
    """Copy up to ``limit`` accepted source files into ``dest``; per-language counts.
    Languages are taken round-robin across origins' files so the non-Python ones are in."""
    by_language: dict[str, list[tuple[Path, str]]] = {}
    for index, origin in enumerate(origins()):
        source = Source(origin.name, "folder", origin.resolve(), origin.resolve())
        for file in walk(source, Counter()):
            target = f"{index:04d}_{origin.name}/{file.rel}"
            by_language.setdefault(file.language, []).append((file.path, target))
    # every non-Python file there is (they are fewer), Python for the rest
    chosen: list[tuple[Path, str]] = []
    for _language, files in sorted(by_language.items(), key=lambda kv: kv[0] == "python"):
        chosen += files[: max(0, limit - len(chosen))]
    counts: Counter[str] = Counter()
    for path, target in chosen:
        out = dest / target
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out)
        counts[path.suffix] += 1
    return counts


def cpu_model() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000, help="files to assemble")
    parser.add_argument("--folder", default=None, help="time this folder instead of assembling")
    parser.add_argument("--json", default=None, help="write the figures here too")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="codesearch-build-") as tmp:
        folder = Path(args.folder) if args.folder else Path(tmp) / "corpus"
        if not args.folder:
            started = time.perf_counter()
            copied = assemble(folder, args.files)
            print(
                f"assembled {sum(copied.values())} files in {time.perf_counter() - started:.1f} s: "
                + ", ".join(f"{n} {ext}" for ext, n in copied.most_common())
            )
        started = time.perf_counter()
        built = build_code_pairs(str(folder.resolve()), eval_share=0.1)
        seconds = time.perf_counter() - started
    report = built.report
    files = report["files"]["read"]
    figures = {
        "machine": cpu_model(),
        "files_read": files,
        "seconds": round(seconds, 2),
        "files_per_second": round(files / seconds, 1),
        "pairs": report["pairs"],
        "by_language": report["by_language"],
        "skipped": report["skipped"],
        "dropped": report["dropped"],
        "functions_without_pair": report["functions_without_pair"],
    }
    print(json.dumps(figures, indent=2))
    print(
        f"\n{files} files in {seconds:.1f} s: {files / seconds:.0f} files/s ({figures['machine']})"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
