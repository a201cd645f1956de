"""Generated corpora for the benchmarks: held out from ``examples/corpus``, any size, seeded.

    python bench/corpus.py OUT_DIR N [--seed S]

A mix like a real bucket: two thirds design JSON (nested screens and components, a few large
ones), one third PRDs as Markdown (headings, bullets) and plain text, with names in several
teams and folders. Words come from a fixed vocabulary so token counts are realistic and every
file differs.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

_VOCABULARY = (
    "itinerary traveller offline sync booking calendar export map pin route budget expense "
    "split group poll invite member permission share link notification quiet hours timezone "
    "currency receipt upload photo document vault passport visa reminder checklist packing "
    "weather alert flight delay gate seat lodging check-in checkout review rating search "
    "filter sort pagination latency cache retry conflict merge edit history audit admin "
    "role onboarding tutorial empty state error toast modal sheet drawer tab bar accessibility "
    "contrast screen reader dynamic type haptics animation dark mode theme token spacing grid"
)
WORDS = _VOCABULARY.split()
TEAMS = ("Aurora", "Borealis", "Cascade", "Delta", "Ember", "Fjord", "Glacier", "Harbor")


def _sentence(rng: random.Random, low: int = 6, high: int = 18) -> str:
    words = rng.choices(WORDS, k=rng.randint(low, high))
    return " ".join(words).capitalize() + "."


def _design(rng: random.Random, i: int) -> dict[str, object]:
    screens = rng.choices((1, 2, 3, 4, 12), weights=(3, 4, 3, 2, 1))[0]
    return {
        "title": f"Design {i}: {' '.join(rng.choices(WORDS, k=3))}",
        "owner": f"{rng.choice(TEAMS)} team",
        "status": rng.choice(("draft", "review", "shipped")),
        "summary": _sentence(rng, 12, 30),
        "tokens": {"spacing": f"{rng.choice((4, 8, 12))}px", "radius": f"{rng.randint(2, 16)}px"},
        "screens": [
            {
                "name": f"Screen {s}: {rng.choice(WORDS)}",
                "purpose": _sentence(rng),
                "components": [
                    {
                        "type": rng.choice(WORDS),
                        "label": rng.choice(WORDS),
                        "behavior": _sentence(rng),
                    }
                    for _ in range(rng.randint(2, 6))
                ],
            }
            for s in range(screens)
        ],
        "open_questions": [_sentence(rng) for _ in range(rng.randint(0, 3))],
    }


def _prd(rng: random.Random, i: int, markdown: bool) -> str:
    sections = rng.randint(2, 7)
    lines = [f"# PRD {i}: {' '.join(rng.choices(WORDS, k=3))}" if markdown else f"PRD {i}", ""]
    for s in range(sections):
        title = rng.choice(("Problem", "Goals", "Non-goals", "Requirements", "Metrics", "Risks"))
        lines += [f"## {title} {s}" if markdown else f"{title.upper()} {s}", ""]
        for _ in range(rng.randint(1, 4)):
            if markdown and rng.random() < 0.4:
                lines += [f"- {_sentence(rng)}" for _ in range(rng.randint(2, 5))]
            else:
                lines.append(" ".join(_sentence(rng) for _ in range(rng.randint(2, 6))))
            lines.append("")
    return "\n".join(lines)


def generate(root: Path, n: int, *, seed: int = 7, designs: float = 0.6) -> list[str]:
    """Write ``n`` files under ``root``; returns their relative paths.

    ``designs`` is the share of design JSON; the rest are PRDs, five Markdown to three text.
    """
    rng = random.Random(seed)
    paths = []
    markdown = designs + (1 - designs) * 0.625  # 0.6 -> 0.85, the mix the other benches use
    for i in range(n):
        kind = rng.random()
        if kind < designs:
            rel = f"designs/{rng.choice(TEAMS)}_team/design-{i:05d}.json"
            data = json.dumps(_design(rng, i), indent=2, ensure_ascii=False)
        elif kind < markdown:
            rel = f"prds/{rng.choice(('core', 'growth', 'platform'))}/prd-{i:05d}.md"
            data = _prd(rng, i, markdown=True)
        else:
            rel = f"prds/notes/prd-{i:05d}.txt"
            data = _prd(rng, i, markdown=False)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(data, encoding="utf-8")
        paths.append(rel)
    return paths


if __name__ == "__main__":
    seed = int(sys.argv[sys.argv.index("--seed") + 1]) if "--seed" in sys.argv else 7
    print(len(generate(Path(sys.argv[1]), int(sys.argv[2]), seed=seed)), "files")
