"""Mark a flow run Crashed when its heartbeats stop: Prefect's documented zombie-flow automation.

    PREFECT_API_URL=... python deployments/zombies.py

A flow process killed outright (kill -9, a lost machine, an evicted container) never reports
its end. A worker that started it reports Crashed when the process exits, but a run without
one (``python flows/ingest.py`` against a server), or one whose worker went down with it,
stays Running for ever. Every flow run sends a heartbeat event each
``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` seconds (180 by default, 30 at least); this automation
changes a run that has sent one and then nothing - no heartbeat, no final state - for three
periods to Crashed. It lives on the server, so it is created once per server (scripts/stack.sh
does it); running this again updates it in place.
"""

from __future__ import annotations

import sys
from datetime import timedelta

from prefect.automations import Automation
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification
from prefect.settings import get_current_settings

NAME = "tidal: crash zombie flow runs"
MISSED_HEARTBEATS = 3
"""Heartbeats a run may miss before it is marked Crashed: one late beat on a loaded machine is
not a death."""


def zombie_automation(heartbeat_seconds: int) -> Automation:
    """The automation for flows beating every ``heartbeat_seconds``."""
    silent = timedelta(seconds=MISSED_HEARTBEATS * heartbeat_seconds)
    return Automation(
        name=NAME,
        description=f"A flow run with no heartbeat or final state for {silent} is Crashed.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=silent,
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"no heartbeat for {silent}: the flow's process is gone (killed, or its "
                "machine lost); the next run retries its files",
            )
        ],
    )


def main() -> int:
    frequency = get_current_settings().flows.heartbeat_frequency
    if frequency is None:
        print("PREFECT_FLOWS_HEARTBEAT_FREQUENCY is unset: flow runs send no heartbeat")
        return 1
    wanted = zombie_automation(frequency)
    try:
        current = Automation.read(name=NAME)
    except ValueError:  # none yet
        wanted.create()
        print(f"created automation {NAME!r}: {wanted.description}")
        return 0
    wanted.id = current.id
    wanted.update()
    print(f"updated automation {NAME!r}: {wanted.description}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
