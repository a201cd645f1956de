"""How big Tidal's chunks are, and what an edit re-sends: this chunker against the previous one.

    python bench/chunks.py                      # examples/corpus + a generated 600-file corpus
    python bench/chunks.py --files 2000 --edits 60

No database, no model: parse and chunk every file twice (the chunker as it was at commit
``BASELINE``, and as it is), at 512/64 (the OpenAI setting), then make ``--edits`` realistic
edits (one word replaced in one sentence of a random file, or one sentence added to a random
paragraph) and count the tokens of chunks whose text is new: what the embedding cache cannot
serve, so what the next run sends to the provider.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BASELINE = "2237a83"
"""The last commit of the section-per-chunk chunker (CHUNKER_VERSION 3)."""

Chunker = Callable[[str], list[tuple[str, int]]]


def _chunker(module: object) -> Chunker:
    from tidal.chunking import ChunkingOptions

    options = ChunkingOptions(512, 64)

    def run(text: str) -> list[tuple[str, int]]:
        return [(c.text, c.token_count) for c in module.chunk_text(text, options)]  # type: ignore[attr-defined]

    return run


def _baseline() -> Chunker:
    source = subprocess.run(
        ["git", "show", f"{BASELINE}:tidal/chunking.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "chunking_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("chunking_baseline", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return _chunker(module)


def _edit(rng: random.Random, data: str, path: str) -> str:
    """One small edit a person makes: a word changed, or a sentence added to a paragraph."""
    from bench.corpus import WORDS, _sentence

    ends = '"' if path.endswith(".json") else " \n"  # in JSON: a sentence closing a string
    sentences = [i for i in range(len(data) - 1) if data[i] == "." and data[i + 1] in ends]
    if not sentences:
        return data + " " + _sentence(rng)
    at = rng.choice(sentences)
    if rng.random() < 0.5 or path.endswith(".json"):  # inside a JSON string: change a word
        start = data.rfind(" ", 0, at)
        if start < data.rfind('"', 0, at):  # a one-word string: add a word instead
            return data[:at] + " " + rng.choice(WORDS) + data[at:]
        return data[: start + 1] + rng.choice(WORDS) + data[at:]
    return data[: at + 1] + " " + _sentence(rng) + data[at + 1 :]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=600)
    parser.add_argument("--edits", type=int, default=30)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()

    import tidal.chunking
    from bench.corpus import generate
    from tidal.parsing import parse

    work = Path(tempfile.mkdtemp(prefix="tidal-chunks-"))
    generate(work / "generated", args.files, seed=args.seed)
    corpora = {"examples/corpus": ROOT / "examples" / "corpus", "generated": work / "generated"}
    chunkers = {"baseline (v3)": _baseline(), "now": _chunker(tidal.chunking)}
    rng = random.Random(args.seed)

    print(
        f"{'corpus':16} {'chunker':14} {'chunks':>7} {'median tok':>10} {'p10':>5} "
        f"{'<100 tok':>8}  {'edits':>5} {'tokens re-sent':>14} {'per edit':>8}"
    )
    for label, folder in corpora.items():
        files = {
            str(p.relative_to(folder)): p.read_text(encoding="utf-8")
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        }
        edited = dict(rng.sample(sorted(files.items()), min(args.edits, len(files))))
        edited = {path: _edit(rng, data, path) for path, data in edited.items()}
        for name, chunk in chunkers.items():
            before = {path: chunk(parse(path, data.encode()).text) for path, data in files.items()}
            sizes = [n for pieces in before.values() for _, n in pieces]
            resent = 0
            for path, data in edited.items():
                old = {text for text, _ in before[path]}
                after = chunk(parse(path, data.encode()).text)
                resent += sum(n for text, n in after if text not in old)
            deciles = statistics.quantiles(sizes, n=10)
            small = sum(1 for n in sizes if n < 100) / len(sizes)
            print(
                f"{label:16} {name:14} {len(sizes):7} {statistics.median(sizes):10.0f} "
                f"{deciles[0]:5.0f} {small:8.0%}  {len(edited):5} {resent:14} "
                f"{resent / len(edited):8.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
