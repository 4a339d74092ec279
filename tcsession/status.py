"""`inv status` / `inv lab.status`: what each host is, read in one parallel round trip."""

from __future__ import annotations

import dataclasses
import json as jsonlib

from tcsession.facts import FACTS_SCRIPT, HostFacts, parse_facts
from tcsession.inventory import Inventory
from tcsession.remote import Remote


@dataclasses.dataclass(frozen=True)
class HostStatus:
    name: str
    role: str
    address: str
    reachable: bool
    error: str | None = None
    facts: HostFacts | None = None

    @property
    def problems(self) -> list[str]:
        if not self.reachable:
            return [self.error or "unreachable"]
        out = []
        if self.facts.system_state not in ("running",):
            state = self.facts.system_state
            failed = ", ".join(self.facts.failed_units) or "no failed unit listed"
            out.append(f"systemd {state} ({failed})")
        return out

    def to_dict(self) -> dict:
        d = {"name": self.name, "role": self.role, "address": self.address,
             "reachable": self.reachable, "problems": self.problems}
        if self.facts:
            f = self.facts
            d.update(os=f.os_pretty, system_state=f.system_state, failed_units=list(f.failed_units),
                     package_manager=f.package_manager, packages=f.packages,
                     active={k: v for k, v in f.active.items() if k in f.packages or v == "active"},
                     listening=sorted({f"{l.proto}/{l.address}:{l.port}" for l in f.listeners}))
        return d


@dataclasses.dataclass(frozen=True)
class HostReport:
    hosts: tuple[HostStatus, ...]

    @property
    def healthy(self) -> bool:
        return all(not h.problems for h in self.hosts)

    def to_dict(self) -> dict:
        return {"healthy": self.healthy, "hosts": [h.to_dict() for h in self.hosts]}


def host_report(inv: Inventory) -> HostReport:
    with Remote(inv) as remote:
        results = remote.run_all(inv.hosts, FACTS_SCRIPT)
    out = []
    for h in inv.hosts:
        r = results[h.name]
        if r.exit is None:
            out.append(HostStatus(h.name, h.role, h.address, False, r.why()))
        else:
            out.append(HostStatus(h.name, h.role, h.address, True, facts=parse_facts(r.stdout)))
    return HostReport(tuple(out))


def print_host_report(report: HostReport, as_json: bool = False) -> None:
    if as_json:
        print(jsonlib.dumps(report.to_dict(), indent=2))
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title="tcsession hosts")
    for col in ("host", "role", "address", "reachable", "OS", "systemd", "packages", "problems"):
        table.add_column(col)
    for h in report.hosts:
        f = h.facts
        table.add_row(
            h.name, h.role, h.address,
            Text("yes", style="green") if h.reachable else Text("no", style="red"),
            Text(f.os_short if f else "-"),
            Text(f.system_state if f else "-",
                 style="green" if f and f.system_state == "running" else "yellow"),
            Text(", ".join(f"{k} {v}" for k, v in f.packages.items()) if f and f.packages else "none"),
            Text("; ".join(h.problems) or "ok", style="red" if h.problems else "green"),
        )
    console = Console()
    console.width = max(console.width, 120)
    console.print(table)
