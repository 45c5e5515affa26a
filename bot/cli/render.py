"""How a rollout's progress looks in a terminal: `patchpilot status` / `watch` and the demo.

One renderer, `render_progress`, with two layouts of the same `RolloutProgress`:

- `Layout.HOSTS` (status, watch): a table with a row per host (state, step, times, failure);
- `Layout.CLUSTERS` (the demo's live view): a bar per cluster with the hosts in flight, then
  every failed host and the Web UI link.

The demo's plan table and its one-line-per-event log live here too, with the same host labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from workflows.models import ClusterProgress, HostProgress, HostState, Phase, RolloutProgress
from workflows.progress import DRY_RUN_STATES

STATE_STYLE = {
    HostState.DONE: "green",
    HostState.FAILED: "red",
    HostState.RUNNING: "yellow",
    HostState.SKIPPED: "dim",
    HostState.PENDING: "",
}
HOST_COLUMNS = ("cluster", "host", "pilot", "state", "step", "started", "finished", "note")
BAR_WIDTH = 30


class Layout(StrEnum):
    """Which view of the progress `render_progress` draws."""

    HOSTS = "hosts"  # a row per host: status and watch
    CLUSTERS = "clusters"  # a bar per cluster: the demo


def render_progress(
    progress: RolloutProgress,
    *,
    layout: Layout = Layout.HOSTS,
    status: str = "",
    ui_link: str | None = None,
) -> RenderableType:
    """The progress as a rich renderable.

    `status` is the workflow's execution status ("RUNNING", "COMPLETED", …), shown in the HOSTS
    title; `ui_link` is the Temporal Web UI address, shown under the CLUSTERS view.
    """
    if layout == Layout.CLUSTERS:
        return _cluster_view(progress, ui_link)
    return _host_table(progress, status)


def host_label(host: HostProgress, *, cluster: bool = True) -> str:
    """ "cluster-a/a1 (pilot)", or without `cluster` "a1 (pilot)"."""
    name = f"{host.cluster}/{host.name}" if cluster else host.name
    return f"{name}{' (pilot)' if host.pilot else ''}"


def _host_table(progress: RolloutProgress, status: str) -> Table:
    table = Table(
        title=f"{progress.rollout_id} — {progress.phase.value} (workflow {status.lower()})",
        caption=progress.gate or progress.message or "",
    )
    for column in HOST_COLUMNS:
        table.add_column(column)
    for cluster in progress.clusters:
        for host in cluster.hosts:
            # With what the preconditions reported (held packages, …: host text, escaped).
            note = "; ".join(filter(None, [host.failure_reason, *map(escape, host.notes)]))
            if host.in_maintenance and host.state != HostState.RUNNING:
                note = (note + " [in maintenance]").strip()
            style = STATE_STYLE[host.state]
            table.add_row(
                cluster.name,
                host.name,
                "yes" if host.pilot else "",
                f"[{style}]{host.state.value}[/]" if style else "pending",
                host.step or "",
                host.started_at.strftime("%H:%M:%S") if host.started_at else "",
                host.finished_at.strftime("%H:%M:%S") if host.finished_at else "",
                note,
            )
        if cluster.note:
            table.add_row(cluster.name, "", "", "", "", "", "", cluster.note)
    return table


def _cluster_view(progress: RolloutProgress, ui_link: str | None) -> RenderableType:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(no_wrap=True)
    grid.add_column(width=BAR_WIDTH)
    grid.add_column(no_wrap=True, justify="right")
    grid.add_column()
    # A dry run patches nothing: its hosts are found ready or refused.
    words = DRY_RUN_STATES if progress.dry_run else {"done": "patched", "failed": "failed"}
    for cluster in progress.clusters:
        failed = cluster.count(HostState.FAILED)
        colour = "red" if failed else "green"
        bar = ProgressBar(
            total=len(cluster.hosts) or 1,
            completed=cluster.count(HostState.DONE) + failed,
            width=BAR_WIDTH,
            complete_style=colour,
            finished_style=colour,
        )
        grid.add_row(
            f"[bold]{cluster.name}[/]",
            bar,
            f"{cluster.count(HostState.DONE)}/{len(cluster.hosts)} {words['done']}",
            _cluster_now(cluster),
        )
    parts: list[RenderableType] = [
        Text.from_markup(
            f"Rollout [bold]{progress.rollout_id}[/] — [bold]{progress.phase.value}[/]"
        ),
        grid,
    ]
    for host in progress.hosts():
        if host.state == HostState.FAILED:
            parts.append(
                Text.from_markup(
                    f"[bold red]✗ {host.cluster}/{host.name}[/] {words['failed']} at step "
                    f"[bold]{escape(host.step or '?')}[/]: "
                    f"{escape(host.failure_reason or 'unknown reason')}"
                )
            )
    if ui_link:
        parts.append(Text.from_markup(f"[dim]Temporal Web UI: {ui_link}[/]"))
    return Group(*parts)


def _cluster_now(cluster: ClusterProgress) -> str:
    """What a cluster is doing: its hosts in flight with their step, else how it stands."""
    running = [h for h in cluster.hosts if h.state == HostState.RUNNING]
    if running:
        return ", ".join(f"{host_label(h, cluster=False)}: {h.step}" for h in running)
    if cluster.count(HostState.FAILED):
        return "[red]stopped[/]"
    if cluster.count(HostState.DONE) == len(cluster.hosts):
        return "[green]done[/]"
    if cluster.count(HostState.SKIPPED):
        return "[dim]skipped[/]"
    return "[dim]waiting[/]"


def plan_table(progress: RolloutProgress) -> Table:
    """The rollout's order: per cluster, its pilot hosts and the hosts that follow in waves."""
    table = Table(title="Rollout plan", title_justify="left")
    for column in ("order", "cluster", "pilot hosts (first, one by one)", "then, in waves"):
        table.add_column(column)
    for order, cluster in enumerate(progress.clusters, start=1):
        pilots = [h.name for h in cluster.hosts if h.pilot]
        rest = [h.name for h in cluster.hosts if not h.pilot]
        table.add_row(str(order), cluster.name, ", ".join(pilots) or "-", ", ".join(rest) or "-")
    return table


@dataclass
class EventLog:
    """Turns successive progress snapshots into one printed line per host event and phase."""

    console: Console
    states: dict[str, HostState] = field(default_factory=dict)
    phase: Phase | None = None

    def update(self, progress: RolloutProgress) -> None:
        """Print what changed since the last snapshot: the phase, then each host's new state."""
        if progress.phase != self.phase:
            self.phase = progress.phase
            if progress.phase in (Phase.PREFLIGHT, Phase.PATCHING):
                self.console.print(f"  phase: [bold]{progress.phase.value}[/]")
        for host in progress.hosts():
            if host.state == self.states.get(host.name, HostState.PENDING):
                continue
            self.states[host.name] = host.state
            self.console.print(event_line(host, dry_run=progress.dry_run))


def event_line(host: HostProgress, *, dry_run: bool = False) -> str:
    """One host's new state as a line: started, patched in N s, failed at …, skipped; in a
    `dry_run` (which patches nothing) inspected: ready in N s, refused at …."""
    who = host_label(host)
    if host.state == HostState.RUNNING:
        return f"  [yellow]▶[/] {who} started"
    if host.state == HostState.DONE:
        took = ""
        if host.started_at and host.finished_at:
            took = f" in {(host.finished_at - host.started_at).total_seconds():.1f}s"
        return f"  [green]✓[/] {who} {DRY_RUN_STATES['done'] if dry_run else 'patched'}{took}"
    if host.state == HostState.FAILED:
        where = " [in maintenance]" if host.in_maintenance else ""
        return (
            f"  [bold red]✗ {who} {DRY_RUN_STATES['failed'] if dry_run else 'failed'} at step "
            f"{escape(host.step or '?')}[/]: "
            f"{escape(host.failure_reason or 'unknown reason')}{where}"
        )
    if host.state == HostState.SKIPPED:
        return f"  [dim]- {who} skipped (not touched)[/]"
    return f"  {who}: {host.state.value}"
