"""The layers stay apart: the domain package never imports the shell around it.

Each check runs in a fresh interpreter, so what another test imported cannot hide an import.
"""

from __future__ import annotations

import json
import subprocess
import sys

SHELL = ("prefect", "flows", "tasks", "deployments")


def _imported_after(code: str) -> dict[str, object]:
    probe = (
        f"{code}\n"
        "import json, sys\n"
        f"shell = sorted({{m for m in sys.modules if m.split('.')[0] in {SHELL!r}}})\n"
        "print(json.dumps({'modules': locals().get('names', []), 'shell': shell}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_no_module_of_the_domain_package_imports_prefect_flows_or_tasks() -> None:
    seen = _imported_after(
        "import importlib, pkgutil, tidal\n"
        "names = [m.name for m in pkgutil.walk_packages(tidal.__path__, 'tidal.')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
    )
    modules = seen["modules"]
    assert isinstance(modules, list)
    # The walk reached the whole package, backends included, not just its top.
    assert {"tidal.run", "tidal.store.memory", "tidal.embedders.openai"} <= set(modules)
    assert seen["shell"] == []


def test_the_cli_loads_prefect_only_to_run_an_ingest() -> None:
    seen = _imported_after("import flows.cli")
    assert [m for m in seen["shell"] if str(m).startswith("prefect")] == []  # type: ignore[union-attr]
