"""The deployment for real: a Prefect server on a free port with its own home, the `tidal`
process pool, `prefect deploy --all` from prefect.yaml, a worker, and
`prefect deployment run tidal/ingest`, all through `scripts/stack.sh` as a user would."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.services import free_port
from tidal.settings import REPO_ROOT, SAMPLE_CORPUS


@pytest.fixture
def stack(tmp_path: Path, database_url: str) -> Iterator[dict[str, str]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDAL_", "PREFECT_"))}
    env.update(
        PYTHON=sys.executable,
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        TIDAL_PREFECT_PORT=str(port),
        TIDAL_STACK_DIR=str(tmp_path / "stack"),
        TIDAL_DATABASE_URL=database_url,  # the worker's environment: secrets live here
        TIDAL_DATA_DIR=str(tmp_path / "data"),
        PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
    )
    script = ["bash", str(REPO_ROOT / "scripts" / "stack.sh")]
    up = subprocess.run(script, env=env, capture_output=True, text=True, timeout=300)
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        yield env
    finally:
        pids = [
            int((tmp_path / "stack" / f"{name}.pid").read_text())
            for name in ("server", "worker")
            if (tmp_path / "stack" / f"{name}.pid").exists()
        ]
        subprocess.run([*script, "stop"], env=env, timeout=60)
        for pid in pids:  # every process the stack started is gone
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                continue
            os.killpg(pid, signal.SIGKILL)
            pytest.fail(f"process group {pid} survived `stack.sh stop`")


def test_prefect_deployment_run_ingests_and_the_deployment_is_scheduled_daily(
    stack: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    corpus = tmp_path / "corpus"
    for rel in ("prds/referral-program.md", "designs/Aurora_team/icon-set.json"):
        (corpus / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SAMPLE_CORPUS / rel, corpus / rel)
    prefect = [sys.executable, "-m", "prefect"]

    done = subprocess.run(
        [*prefect, "deployment", "run", "tidal/ingest", "--param", f"source={corpus}", "--watch"],
        env=stack,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Flow run finished successfully in 'Completed'" in done.stdout

    with psycopg.connect(database_url) as conn:
        files = dict(conn.execute("select path, status from ingested_files").fetchall())
        (chunks,) = conn.execute("select count(*) from documents").fetchone()
    assert files == {
        "prds/referral-program.md": "ingested",
        "designs/Aurora_team/icon-set.json": "ingested",
    }
    assert chunks > 0

    shown = subprocess.run(
        [*prefect, "deployment", "inspect", "tidal/ingest"],
        env=stack,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "'cron': '0 3 * * *'" in shown and "'timezone': 'UTC'" in shown
    assert "'active': True" in shown
    assert "'entrypoint': 'flows/ingest.py:tidal'" in shown
    assert "'work_pool_name': 'tidal'" in shown
