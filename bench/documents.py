"""What reading a PDF, Word or HTML PRD costs, next to the Markdown of the same text.

    python bench/documents.py                     # 1, 10 and 100 pages, 3 rounds
    python bench/documents.py --pages 1 10 --rounds 1

The same generated PRD (``tests/documents.py``: a section per A4 page, three paragraphs, a
table every other page) is written as Markdown, HTML, Word and PDF. Each round, in alternating
order, each (format, pages) is parsed by ``tidal.parsing.parse`` in its own subprocess, after
its imports, one warm-up parse of a page in the same format, and with the file already in
memory: the parse time, and the peak RSS the parse
added (the kernel's high-water mark is reset just before it), both per MB of file. No
database, no model.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORMATS = {"markdown": ".md", "html": ".html", "docx": ".docx", "pdf": ".pdf"}


def write(fmt: str, pages: int, folder: Path) -> Path:
    from tests import documents as make

    sections = make.pages_of_prose(pages)
    data = {
        "markdown": lambda: make.markdown(sections).encode(),
        "html": lambda: make.page_html(sections, title="Bench PRD").encode(),
        "docx": lambda: make.docx(sections, title="Bench PRD"),
        "pdf": lambda: make.pdf(sections, title="Bench PRD"),
    }[fmt]()
    path = folder / f"prd-{pages}{FORMATS[fmt]}"
    path.write_bytes(data)
    return path


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(path: Path, warm: Path) -> dict[str, float]:
    """One parse of ``path`` in this process, after one of ``warm`` (a page of the same
    format: what a process pays once, loading the library's tables): seconds and the peak RSS
    the parse added, in MB."""
    # The readers' libraries load before the clock starts: a run imports them once.
    import tidal.documents.html
    import tidal.documents.pdf
    import tidal.documents.word  # noqa: F401
    from tidal.parsing import parse

    parse(f"prds/{warm.name}", warm.read_bytes())
    data = path.read_bytes()
    # Reset VmHWM to the current RSS (Linux 4.0+), so the peak read after is this parse's.
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    before = _rss_mb("VmRSS")
    started = time.perf_counter()
    document = parse(f"prds/{path.name}", data)
    seconds = time.perf_counter() - started
    return {
        "mb": len(data) / 1e6,
        "seconds": seconds,
        "peak_mb": max(0.0, _rss_mb("VmHWM") - before),
        "chars": len(document.text),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--one", type=Path, nargs=2, help=argparse.SUPPRESS)  # file, warm-up
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(*args.one)))
        return
    sys.path.insert(0, str(ROOT))
    runs: dict[tuple[str, int], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = {(f, n): write(f, n, folder) for f in FORMATS for n in args.pages}
        (folder / "warm").mkdir()
        warm = {f: write(f, 1, folder / "warm") for f in FORMATS}
        for round_ in range(args.rounds):
            order = list(files) if round_ % 2 == 0 else list(reversed(files))
            for key in order:
                done = subprocess.run(
                    [sys.executable, __file__, "--one", str(files[key]), str(warm[key[0]])],
                    capture_output=True,
                    text=True,
                    check=True,
                    cwd=ROOT,
                    env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
                )
                runs.setdefault(key, []).append(json.loads(done.stdout))
    print("| format | pages | file MB | text chars | parse ms | s per MB | peak RSS MB | per MB |")
    print("|---|---|---|---|---|---|---|---|")
    for pages in args.pages:
        for fmt in FORMATS:
            got = runs[(fmt, pages)]
            mb = got[0]["mb"]
            seconds = min(r["seconds"] for r in got)  # the least disturbed round
            peak = min(r["peak_mb"] for r in got)
            print(
                f"| {fmt} | {pages} | {mb:.3f} | {got[0]['chars']:,.0f} | {seconds * 1000:.1f} | "
                f"{seconds / mb:.2f} | {peak:.1f} | {peak / mb:.0f} |"
            )


if __name__ == "__main__":
    main()
