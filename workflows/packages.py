"""What an update did to a host's packages (issue 15, item 6): the per-host package report.

Read on the host by activities/package_report.py (dpkg's state before and after the update, apt's
own "kept back" list, the reboot flag, conffiles dpkg left beside the host's), carried in the
update step's result and the host workflow's result, shown by the summary, the notifications and
`patchpilot report`. Pure data: no I/O here.
"""

from __future__ import annotations

from pydantic import Field

from workflows.fields import ContractModel


class PackageChange(ContractModel):
    """One package: `old` None when it was installed, `new` None when it was removed."""

    name: str
    old: str | None = None
    new: str | None = None


class KeptBack(ContractModel):
    """A package apt left at its version, and apt's reason as PatchPilot understood it."""

    name: str
    reason: str


class UnfinishedPackage(ContractModel):
    """A package dpkg left half-way (dpkg-query's state: half-configured, unpacked, …)."""

    name: str
    version: str
    state: str


class PackageReport(ContractModel):
    """What one update did on one host (lists sorted by package name)."""

    upgraded: list[PackageChange] = Field(default_factory=list)
    installed: list[PackageChange] = Field(default_factory=list)
    removed: list[PackageChange] = Field(default_factory=list)
    kept_back: list[KeptBack] = Field(default_factory=list)
    held: list[str] = Field(default_factory=list)
    unfinished: list[UnfinishedPackage] = Field(default_factory=list)
    reboot_required: bool = False
    reboot_packages: list[str] = Field(default_factory=list)
    # Files dpkg left beside a conffile the host had changed (.dpkg-dist, .dpkg-old, .dpkg-new).
    conffiles: list[str] = Field(default_factory=list)

    def summary_line(self) -> str:
        """One line: the counts, then what needs a person (unfinished, reboot, conffiles)."""
        parts = [
            f"upgraded {len(self.upgraded)}, installed {len(self.installed)}, "
            f"removed {len(self.removed)}, kept back {len(self.kept_back)}, held {len(self.held)}"
        ]
        if self.unfinished:
            parts.append(
                "UNFINISHED "
                + ", ".join(f"{p.name} {p.version} ({p.state})" for p in self.unfinished)
            )
        if self.reboot_required:
            by = f" by {', '.join(self.reboot_packages)}" if self.reboot_packages else ""
            parts.append(f"reboot required{by}")
        if self.conffiles:
            parts.append(f"conffiles left: {', '.join(self.conffiles)}")
        return "; ".join(parts)

    def lines(self) -> list[str]:
        """The whole report, one fact per line, for people (e-mail, `patchpilot report`)."""
        found = [f"upgraded {c.name} {c.old} → {c.new}" for c in self.upgraded]
        found += [f"installed {c.name} {c.new}" for c in self.installed]
        found += [f"removed {c.name} {c.old}" for c in self.removed]
        found += [f"kept back {k.name}: {k.reason}" for k in self.kept_back]
        found += [f"held {name}" for name in self.held]
        found += [f"UNFINISHED {p.name} {p.version}: {p.state}" for p in self.unfinished]
        if self.reboot_required:
            by = f" (by {', '.join(self.reboot_packages)})" if self.reboot_packages else ""
            found.append(f"reboot required{by}")
        found += [f"conffile left: {path}" for path in self.conffiles]
        return found

    def rows(self) -> list[tuple[str, str, str, str]]:
        """(kind, package or path, old, new) per fact: the CSV of `patchpilot report`."""
        rows = [("upgraded", c.name, c.old or "", c.new or "") for c in self.upgraded]
        rows += [("installed", c.name, "", c.new or "") for c in self.installed]
        rows += [("removed", c.name, c.old or "", "") for c in self.removed]
        rows += [("kept-back", k.name, k.reason, "") for k in self.kept_back]
        rows += [("held", name, "", "") for name in self.held]
        rows += [("unfinished", p.name, p.version, p.state) for p in self.unfinished]
        if self.reboot_required:
            rows.append(("reboot-required", ",".join(self.reboot_packages), "", ""))
        rows += [("conffile", path, "", "") for path in self.conffiles]
        return rows
