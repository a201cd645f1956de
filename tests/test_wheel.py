"""``pip install .``, not ``-e``: the wheel carries what the code loads at run time (the schema,
the sample corpus, ``py.typed``), and the main job runs from it with no configuration.

The wheel is built here and unpacked into a folder of its own, put first on the path of this
venv's interpreter (its dependencies come from the venv, Tidal from the wheel), and the main job
runs from another working folder, where no checkout can be found. It ingests two of the bundled
files (one of each kind): the whole corpus, through the model, is tests/test_main.py's from the
checkout, and the wheel's copy of it is compared here byte for byte. Two of the smallest: the
model embeds about ten chunks a second on two cores, and offline-sync.md alone has 39.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from tidal.settings import REPO_ROOT, SAMPLE_CORPUS

PICKS = ("prds/referral-program.md", "designs/Cascade_team/shared-notes.json")


def test_the_wheel_carries_its_data_and_runs_the_main_job(tmp_path: Path) -> None:
    built = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(built), str(REPO_ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    [wheel] = built.glob("tidal-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "tidal/store/schema.sql" in names and "tidal/py.typed" in names
    prefix = "tidal/sample/corpus/"
    carried = {
        n.removeprefix(prefix): zipfile.ZipFile(wheel).read(n)
        for n in names
        if n.startswith(prefix) and not n.endswith("/")
    }
    sample = {
        p.relative_to(SAMPLE_CORPUS).as_posix(): p.read_bytes()
        for p in SAMPLE_CORPUS.rglob("*")
        if p.is_file()
    }
    assert len(carried) == 44 and carried == sample  # the whole sample corpus, byte for byte
    # Every module ships: below, the venv's editable install would quietly stand in for one
    # the wheel lacks (a subpackage missing from pyproject's list).
    modules = {
        path.relative_to(REPO_ROOT).as_posix()
        for package in ("tidal", "flows", "tasks")
        for path in (REPO_ROOT / package).rglob("*.py")
    }
    assert modules - set(names) == set()

    installed = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(installed)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDAL_", "PREFECT_"))}
    env.update(
        PYTHONPATH=str(installed),
        TIDAL_PREFECT_SERVER="temporary",
        PREFECT_HOME=str(tmp_path / "prefect"),
        HF_HUB_OFFLINE="1",
    )
    done = subprocess.run(
        [sys.executable, "-m", "flows.ingest", *PICKS],  # and nothing set but a server
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "Tidal: 2 files from " + str(installed / "tidal" / "sample" / "corpus") in output
    assert "ingested 2, skipped 0 (unchanged), failed 0" in output
