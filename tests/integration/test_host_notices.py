"""Host notices no channel sends are not scheduled (issue 16: two notification activities per
host were a third of a host's orchestration): a worker whose e-mail is routed to failures and
summaries (`notify_routes`) patches every host without a start or success notification activity
in any host's history, and the e-mails it is routed still arrive. The shape with the notices is
the rest of the suite's (every worker there e-mails each host's start and success)."""

from __future__ import annotations

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from bot.settings import Settings
from lab import Lab
from tests.integration.test_rollout import approve, rollout, start
from tests.support import Mailbox, record_history, running_worker
from workflows import names
from workflows.models import Phase
from workflows.policies import host_workflow_id


async def test_host_events_routed_away_schedule_no_notice_and_the_rest_arrive(
    fleet: Lab, worker_settings: Settings, temporal_client: Client, mailbox: Mailbox
) -> None:
    routes = {"email": ["approval-request", "failure", "summary"]}
    settings = worker_settings.model_copy(update={"notify_routes": routes})
    async with running_worker(temporal_client, settings):
        handle = await start(temporal_client, settings, rollout(["cluster-a"]))
        await approve(handle)
        summary = await handle.result()
        await record_history(temporal_client, handle.id, "host-notices-routed-away")
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 3
    assert all(fleet.update_count(host) == 1 for host in ("a1", "a2", "a3"))
    assert mailbox.events("host-start") == [] and mailbox.events("host-success") == []
    assert len(mailbox.events("approval-request")) == 1 and len(mailbox.events("summary")) == 1
    for host in ("a1", "a2", "a3"):
        history = await temporal_client.get_workflow_handle(host_workflow_id(host)).fetch_history()
        scheduled = {
            e.activity_task_scheduled_event_attributes.activity_type.name
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        }
        # The update is the one activity left: the preconditions (default maintenance
        # commands) and the short steps are local activities (workflows/host_patch.py).
        assert scheduled == {names.PERFORM_UPDATE}, host
