"""Code search before and after fine-tuning minilm on a broad corpus: MRR@10 per language.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/codesearch.py [--max-pairs-per-language 2500]
        [--max-eval-per-language 200] [--validation-share 0.05] [--epochs E] [--batch-size B]
        [--lr LR] [--loss mnrl] [--source S1,S2,...] [--no-npm] [--json OUT]

Epochs, batch, lr and loss default to the recipe a plain fine-tune on pairs trains with
(``embedding.training.hyperparameters.PAIRS_RECIPE``); set them to compare another.

The corpus (``embedding.data.code_pairs``: doc summary -> code, deduplicated, split by file, so
no held-out file or function is trained on), unless ``--source`` names the sources instead:

- **Python**: several well-documented packages of this virtualenv (``PYTHON_PACKAGES``, those
  installed);
- **JavaScript / TypeScript**: npm packages (``NPM_PACKAGES``) installed into a temporary
  folder with ``npm install --prefix TMP`` (needs the npm registry; ``--no-npm`` skips it);
- **Go**: every package under ``/usr/share/gocode/src`` (Debian's ``golang-*-dev``);
- **Rust**: every crate under ``/usr/share/cargo/registry`` (Debian's ``librust-*-dev``);
- **Java**: source folders given with ``--java`` (e.g. an unpacked ``*-sources.jar``);
  Debian ships no Java sources where this looks, so it is skipped with a message otherwise.

It says which languages it found. To have Go and Rust, on Debian/Ubuntu (as root)::

    apt-get install -y --no-install-recommends golang-golang-x-text-dev \\
        golang-github-spf13-cobra-dev golang-github-sirupsen-logrus-dev \\
        golang-github-gorilla-mux-dev golang-github-pkg-errors-dev \\
        golang-github-stretchr-testify-dev golang-github-google-go-cmp-dev \\
        librust-regex-dev librust-itertools-dev librust-anyhow-dev librust-bytes-dev \\
        librust-serde-dev librust-rand-dev

Training pairs are capped per language (``--max-pairs-per-language``, a seeded sample) so
Python does not drown the rest and the run fits a CPU; so are the held-out pairs
(``--max-eval-per-language``). Then ``embedding.training.loop.finetune`` trains a fresh
minilm with the recipe for pairs (the best epoch kept by the validation MRR@10), and MRR@10
and recall@1 on the held-out pairs are printed before and after, overall and per
language: every held-out query ranks against every held-out code of all languages
(``embedding.evaluation.metrics.retrieval_scores``), and a language's figure is the mean over its
queries.

The best epoch is chosen on a validation split carved from the *training* files
(``--validation-share`` of them, by a stable hash of each file's path with its own salt, so
no validation file is trained on), never on the held-out pairs the figures are measured on:
the held-out files are seen twice only, before and after. ``--validation-share 0`` uses the
held-out pairs for the choice instead (the first runs' way; it favours "after" slightly).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder is sys.path[0], and its queue.py would shadow the stdlib's
# queue (torch imports it): put the repository root there instead.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import importlib.util
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
from collections import defaultdict

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from embedding.data.code_pairs import CodePair, build_code_pairs
from embedding.data.code_pairs.split import file_side
from embedding.training import hyperparameters as hp

MODEL = "minilm"
METRICS = ("mrr@10", "recall@1")
FLOOR = 0.15  # issue 26: overall MRR@10 lift >= 15 % relative, every language > 0
PYTHON_PACKAGES = (
    "click",
    "jinja2",
    "sqlalchemy",
    "starlette",
    "rich",
    "pygments",
    "markdown_it",
    "dateutil",
    "alembic",
    "tomlkit",
    "anyio",
    "mako",
    "pydantic",
    "networkx",
)
NPM_PACKAGES = ("lodash", "date-fns", "rxjs", "zod", "axios", "express", "commander", "yargs")
GO_ROOT = Path("/usr/share/gocode/src")
RUST_ROOT = Path("/usr/share/cargo/registry")
LANGUAGES = ("python", "javascript", "typescript", "go", "java", "rust")


def default_sources(npm_dir: Path | None, java: list[str]) -> tuple[list[str], list[str]]:
    """The sources of the broad corpus present on this machine, and a note per language."""
    sources: list[str] = []
    notes: list[str] = []
    python = [p for p in PYTHON_PACKAGES if importlib.util.find_spec(p) is not None]
    sources += python
    notes.append(f"python: {len(python)} installed packages ({', '.join(python)})")
    if npm_dir is None:
        notes.append("javascript/typescript: npm skipped (--no-npm)")
    else:
        modules = npm_dir / "node_modules"
        installed = [modules / p for p in NPM_PACKAGES if (modules / p).is_dir()]
        sources += [str(p) for p in installed]
        notes.append(
            f"javascript/typescript: {len(installed)} npm packages "
            f"({', '.join(p.name for p in installed)})"
        )
    for name, root, how in (
        ("go", GO_ROOT, "apt-get install golang-*-dev"),
        ("rust", RUST_ROOT, "apt-get install librust-*-dev"),
    ):
        found = package_folders(root) if root.is_dir() else []
        sources += [str(p) for p in found]
        notes.append(
            f"{name}: {len(found)} folders under {root}"
            if found
            else f"{name}: none ({root} missing; {how}, see the docstring)"
        )
    if java:
        sources += java
        notes.append(f"java: {len(java)} source folders (--java)")
    else:
        notes.append(
            "java: skipped (no Java sources here; give unpacked *-sources.jar with --java)"
        )
    return sources, notes


def package_folders(root: Path) -> list[Path]:
    """One folder per package: a crate of the cargo registry; a repository of gocode's
    ``host/owner/repo`` (``golang.org/x/text``) or ``gopkg.in/name``."""
    if root != GO_ROOT:
        return sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())
    found = []
    for host in sorted(p for p in root.iterdir() if p.is_dir()):
        if host.name == "gopkg.in":
            found += sorted(p for p in host.iterdir() if p.is_dir())
        else:
            found += sorted(
                r for o in host.iterdir() if o.is_dir() for r in o.iterdir() if r.is_dir()
            )
    found = [p for p in found if not p.is_symlink()]
    return found


def npm_install(dest: Path, packages: tuple[str, ...]) -> Path | None:
    """``npm install --prefix dest packages``; None (and a message) if npm is missing or fails."""
    npm = shutil.which("npm")
    if npm is None:
        print("npm not found: no JavaScript/TypeScript")
        return None
    done = subprocess.run(
        [npm, "install", "--prefix", str(dest), "--no-audit", "--no-fund", *packages],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        print(f"npm install failed (no JavaScript/TypeScript): {done.stderr.strip()[-500:]}")
        return None
    return dest


def cap(pairs: list[CodePair], limit: int | None, seed: int) -> list[CodePair]:
    """At most ``limit`` pairs per language, a seeded sample, in their original order."""
    if limit is None:
        return pairs
    by_language: dict[str, list[int]] = defaultdict(list)
    for i, pair in enumerate(pairs):
        by_language[pair.language].append(i)
    rng = random.Random(seed)
    kept: set[int] = set()
    for language in sorted(by_language):
        indices = by_language[language]
        kept.update(indices if len(indices) <= limit else rng.sample(indices, limit))
    return [pairs[i] for i in sorted(kept)]


def carve_validation(pairs: list[CodePair], share: float) -> tuple[list[CodePair], list[CodePair]]:
    """(train, validation): whole files moved to validation by a salted hash of their path,
    independent of the held-out split's hash (which uses the bare path)."""
    if share <= 0:
        return pairs, []
    train, validation = [], []
    for pair in pairs:
        # the source's stable label: an npm folder is a fresh temporary path on every run
        key = f"validation:{short(pair.source)}:{pair.path}"
        (validation if file_side(key, share) == "eval" else train).append(pair)
    return train, validation


def file_counts(*sides: list[CodePair]) -> dict[str, int]:
    """Files per side (train, validation, held-out), and how many sit on more than one."""
    sets = [{(p.source, p.path) for p in side} for side in sides]
    shared = sum(len(a & b) for i, a in enumerate(sets) for b in sets[i + 1 :])
    return {
        "train": len(sets[0]),
        "validation": len(sets[1]),
        "held_out": len(sets[2]),
        "on_two_sides": shared,
    }


def per_language(encoder, pairs: list[CodePair]) -> dict[str, dict[str, float]]:
    """MRR@10 and recall@1 overall and per language; every query against the whole pool."""
    from embedding.evaluation.metrics import retrieval_scores

    scores = retrieval_scores(encoder, [p.example for p in pairs])
    groups: dict[str, list[int]] = defaultdict(list)
    for i, pair in enumerate(pairs):
        groups[pair.language].append(i)
    table = {"overall": {m: float(scores[m].mean()) for m in METRICS}}
    for language in sorted(groups):
        table[language] = {m: float(scores[m][groups[language]].mean()) for m in METRICS}
    return table


def counts(pairs: list[CodePair], attribute: str) -> dict[str, int]:
    found: dict[str, int] = defaultdict(int)
    for pair in pairs:
        found[getattr(pair, attribute)] += 1
    return dict(sorted(found.items()))


def short(source: str) -> str:
    """A folder source's label is its path: keep where it came from and its name."""
    if "/" not in source:
        return source
    path = Path(source)
    if path.parent.name == "node_modules":
        return f"npm:{path.name}"
    if str(path).startswith(str(GO_ROOT)):
        return f"gocode:{path.name}"
    if str(path).startswith(str(RUST_ROOT)):
        return f"cargo:{path.name}"
    return path.name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-pairs-per-language", type=int, default=2500, help="training cap")
    parser.add_argument("--max-eval-per-language", type=int, default=200, help="held-out cap")
    recipe = hp.PAIRS_RECIPE  # what a plain fine-tune on pairs trains with
    parser.add_argument("--epochs", type=int, default=recipe["epochs"])
    parser.add_argument("--batch-size", type=int, default=recipe["batch_size"])
    parser.add_argument("--lr", type=float, default=recipe["lr"])
    parser.add_argument("--loss", choices=("mnrl", "cached_mnrl"), default=recipe["loss"])
    parser.add_argument("--mini-batch-size", type=int, default=hp.MINI_BATCH_SIZE.default)
    parser.add_argument("--eval-share", type=float, default=0.1, help="share of files held out")
    parser.add_argument(
        "--validation-share",
        type=float,
        default=0.05,
        help="share of training files carved out to choose the best epoch (0: the held-out)",
    )
    parser.add_argument("--max-val-per-language", type=int, default=100, help="validation cap")
    parser.add_argument("--max-tokens", type=int, default=None, help="training token cap")
    parser.add_argument("--warmup-ratio", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=hp.SEED.default)
    parser.add_argument(
        "--source",
        default=None,
        help="build from these sources only (comma-separated: stdlib, packages, folders) "
        "instead of the broad corpus; nothing is installed",
    )
    parser.add_argument("--java", action="append", default=[], help="a Java source folder")
    parser.add_argument("--no-npm", action="store_true", help="no npm install")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()

    from embedding.inference.encoder import Encoder
    from embedding.training.config import TrainConfig
    from embedding.training.loop import finetune

    with tempfile.TemporaryDirectory(prefix="codesearch-bench-") as tmp:
        tmp_path = Path(tmp)
        started = time.perf_counter()
        if args.source:
            sources = [s for s in args.source.split(",") if s.strip()] + args.java
            notes = [f"sources given: {', '.join(sources)}"]
        else:
            npm_dir = None if args.no_npm else npm_install(tmp_path / "npm", NPM_PACKAGES)
            sources, notes = default_sources(npm_dir, args.java)
        for note in notes:
            print(note)
        built = build_code_pairs(sources, eval_share=args.eval_share)
        build_s = time.perf_counter() - started
    train_files, validation_files = carve_validation(built.train, args.validation_share)
    train = cap(train_files, args.max_pairs_per_language, args.seed)
    held_out = cap(built.eval, args.max_eval_per_language, args.seed)
    validation = cap(validation_files, args.max_val_per_language, args.seed) or held_out
    found = sorted(set(counts(built.train + built.eval, "language")))
    missing = [lang for lang in LANGUAGES if lang not in found]
    print(
        f"languages found: {', '.join(found)}"
        + (f"; none of: {', '.join(missing)}" if missing else "")
    )
    print(
        f"corpus built in {build_s:.0f} s: {len(built.train)} train / {len(built.eval)} held-out "
        f"pairs; used {len(train)} / {len(held_out)} (caps {args.max_pairs_per_language} / "
        f"{args.max_eval_per_language} per language); best epoch chosen on "
        + (
            f"{len(validation)} validation pairs from training files"
            if validation is not held_out
            else "the held-out pairs"
        )
    )
    train_by_language = counts(train, "language")
    eval_by_language = counts(held_out, "language")
    print(f"\n{'language':<12} {'train':>6} {'held-out':>9}")
    for language in found:
        print(
            f"{language:<12} {train_by_language.get(language, 0):>6} "
            f"{eval_by_language.get(language, 0):>9}"
        )
    by_source: dict[str, dict[str, int]] = {}
    for side, pairs in (("train", train), ("eval", held_out)):
        for source, n in counts(pairs, "source").items():
            by_source.setdefault(short(source), {"train": 0, "eval": 0})[side] += n
    print(
        "by source (train/held-out): "
        + ", ".join(f"{s} {c['train']}/{c['eval']}" for s, c in sorted(by_source.items()))
    )

    config = TrainConfig(
        loss=args.loss,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        mini_batch_size=args.mini_batch_size,
        max_tokens=args.max_tokens,
        warmup_ratio=args.warmup_ratio,
    )
    print(
        f"\n{MODEL}: {args.loss}, {args.epochs} epoch(s), batch {args.batch_size}, lr {args.lr:g}, "
        f"max_tokens {args.max_tokens}, warmup {args.warmup_ratio:g}, best epoch kept: "
        f"{config.select_best_epoch}",
        flush=True,
    )
    before = per_language(Encoder.load(MODEL), held_out)
    with tempfile.TemporaryDirectory(prefix="codesearch-model-") as out_dir:
        result = finetune(
            MODEL,
            [p.example for p in train],
            config,
            out_dir=out_dir,
            eval_examples=[p.example for p in validation],
            on_epoch_end=lambda e: print(
                f"epoch {e.epoch}: loss {e.loss:.4f}, validation mrr@10 "
                f"{e.eval.get('mrr@10', 0):.4f}, {e.duration_s:.0f} s, "
                f"{e.samples_per_s:.1f} pairs/s",
                flush=True,
            ),
        )
        after = per_language(Encoder.load(out_dir), held_out)

    print(
        f"\ntrained {result.seconds:.0f} s; exported epoch {result.exported_epoch} "
        f"(best {result.best_epoch})"
    )
    header = f"{'':<12} {'n':>5} {'mrr@10 before':>14} {'after':>7} {'lift':>8}"
    print(f"\n{header} {'recall@1 before':>16} {'after':>7}")
    lifts: dict[str, float | None] = {}
    for name in ["overall", *[lang for lang in found if lang in before]]:
        b, a = before[name], after[name]
        lifts[name] = (a["mrr@10"] - b["mrr@10"]) / b["mrr@10"] if b["mrr@10"] > 0 else None
        n = len(held_out) if name == "overall" else eval_by_language[name]
        lift = f"{lifts[name]:+.1%}" if lifts[name] is not None else "n/a"
        print(
            f"{name:<12} {n:>5} {b['mrr@10']:>14.4f} {a['mrr@10']:>7.4f} {lift:>8} "
            f"{b['recall@1']:>16.4f} {a['recall@1']:>7.4f}"
        )
    overall = lifts["overall"]
    languages_up = all((lifts[lang] or 0) > 0 for lang in lifts if lang != "overall")
    met = overall is not None and overall >= FLOOR and languages_up
    print(
        f"\noverall MRR@10 lift {overall:+.1%} (floor >= {FLOOR:.0%}); every language > 0: "
        f"{'yes' if languages_up else 'no'}: {'MEETS' if met else 'BELOW'} the floor"
        if overall is not None
        else "\noverall MRR@10 lift n/a"
    )

    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "settings": {**vars(args), "model": MODEL},
                    "notes": notes,
                    "languages": found,
                    "pairs_built": {"train": len(built.train), "eval": len(built.eval)},
                    "train_by_language": train_by_language,
                    "eval_by_language": eval_by_language,
                    "validation_pairs": len(validation) if validation is not held_out else 0,
                    "files": file_counts(
                        train, validation if validation is not held_out else [], held_out
                    ),
                    "by_source": by_source,
                    "build_report": built.report,
                    "before": before,
                    "after": after,
                    "lift": lifts,
                    "floor_met": met,
                    "epochs": [{"epoch": e.epoch, "loss": e.loss, **e.eval} for e in result.epochs],
                    "exported_epoch": result.exported_epoch,
                    "train_seconds": result.seconds,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
