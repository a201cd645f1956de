"""Wall time of each interactive command on an unchanged sample corpus, as a user runs them.

    python bench/commands.py [--rounds 3] [--repo PATH] [--workdir DIR]

Every command runs as its own process, from a working folder with no configuration (the
defaults: the bundled sample corpus, the embedded Postgres under ``.tidal``), after one untimed
ingest of the corpus, so each one meets an index that is up to date. Each command gets one
untimed warm-up (the page cache, Python's bytecode) then ``--rounds`` timed runs.

``--repo`` times another checkout's code (``git worktree add /tmp/before <commit>``) with this
interpreter: the before/after of bench/README.md were both taken this way, in one sitting.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))  # bench.common, whichever checkout --repo times

COMMANDS: dict[str, list[str]] = {
    'tidal search "..."': ["-m", "flows.cli", "search", "how do we handle offline sync?"],
    "tidal db sql": ["-m", "flows.cli", "db", "sql"],
    "tidal plan": ["-m", "flows.cli", "plan"],
    "tidal status": ["-m", "flows.cli", "status"],
    "tidal failed": ["-m", "flows.cli", "failed"],
    "python flows/ingest.py": ["{repo}/flows/ingest.py"],
}
"""What each row runs, as ``python ARGS`` (``tidal`` is the ``tidal.cli`` console script)."""


def run(args: list[str], repo: Path, workdir: Path) -> tuple[float, int, str]:
    """One command's wall time, exit code and the tail of its output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDAL_", "PREFECT_API"))}
    env["PYTHONPATH"] = str(repo)
    argv = [sys.executable, *(a.format(repo=repo) for a in args)]
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True)
    return time.perf_counter() - started, done.returncode, (done.stdout + done.stderr)[-400:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repo", type=Path, default=HERE, help="the checkout to time")
    parser.add_argument("--workdir", type=Path, help="default: a new temporary folder")
    parser.add_argument("--only", action="append", help="only these rows (repeatable)")
    args = parser.parse_args()
    repo = args.repo.resolve()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tidal-commands-"))
    from bench.common import stop_local_servers_at_exit

    stop_local_servers_at_exit(workdir)
    workdir.mkdir(parents=True, exist_ok=True)

    seconds, code, tail = run(COMMANDS["python flows/ingest.py"], repo, workdir)
    print(f"setup: ingest of the sample corpus {seconds:.1f} s (exit {code}) in {workdir}")
    if code != 0:
        print(tail, file=sys.stderr)
        return 1
    print(f"{'command':26} {'median s':>9} {'min s':>7} {'max s':>7}  exit")
    for name, command in COMMANDS.items():
        if args.only and name not in args.only:
            continue
        run(command, repo, workdir)  # warm-up, untimed
        timed = [run(command, repo, workdir) for _ in range(args.rounds)]
        walls = [t[0] for t in timed]
        codes = sorted({t[1] for t in timed})
        print(
            f"{name:26} {statistics.median(walls):9.1f} {min(walls):7.1f} {max(walls):7.1f}"
            f"  {','.join(map(str, codes))}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
