"""`tcsession status --graph`: a picture of the cluster, from the status report alone.

nginx at the root, each Tomcat under it with its state, and the sessions' path: in delta mode
who sees whom as a cluster member; in msm mode which memcached node keeps whose sessions (the
Manager's memcachedNodes less its failoverNodes) and which it falls back to (failoverNodes), then
each memcached node with its items and the Tomcats that use it.

`topology(report, width)` is pure: it reads a tcsession.status.Report (the same data --json
prints) and returns a rich Tree; tcsession.ui prints it. `topology_text` renders it to plain text
at a width, for tests and goldens.
"""

from __future__ import annotations

from tcsession.text import printable


def _state(h) -> tuple[str, str]:
    """A host's state in a word or three, and its style."""
    if not h.reachable:
        return "unreachable", "bold red"
    unit = next((f"{what[:-len(' active')]} {detail}" for what, ok, detail in h.checks
                 if what.endswith(" active")), None)
    problems = len(h.problems)
    state = unit or "no service"
    if problems:
        return f"{state}, {problems} problem{'s' if problems > 1 else ''}", "bold red"
    return f"{state}, ok", "green"


def _label(h, extra: str = ""):
    from rich.text import Text

    state, style = _state(h)
    t = Text()
    t.append(h.name, style="bold")
    t.append(f" {h.address} ")
    t.append(state, style=style)
    if extra:
        t.append(f" {extra}", style="dim")
    return t


def _names(report) -> dict[str, str]:
    """address -> host name (members and memcached nodes are named by address)."""
    return {h.address: h.name for h in report.hosts}


def _who(addr: str, names: dict[str, str]) -> str:
    return names.get(addr.rsplit(":", 1)[0], addr)


def _delta(h, tomcats, names, node) -> None:
    from rich.text import Text

    if not h.reachable:
        return
    seen = {_who(m, names) for m in h.members}
    peers = [t.name for t in tomcats if t.name != h.name]
    sees = [p for p in peers if p in seen]
    missing = [p for p in peers if p not in seen]
    strangers = sorted(seen - set(peers) - {h.name})
    t = Text("sees as members: ")
    t.append(", ".join(sees) or "nobody", style="green" if sees and not missing else "")
    if missing:
        t.append("; does not see: ")
        t.append(", ".join(missing), style="red")
    if strangers:
        t.append("; unknown: ")
        t.append(", ".join(strangers), style="yellow")
    node.add(t)


def _primary(h) -> list[str]:
    """The memcached nodes a Tomcat keeps its sessions on (MSM: memcachedNodes less failoverNodes)."""
    return [n for n, _ in h.memcached_nodes if n not in h.failover_nodes] or [n for n, _ in h.memcached_nodes]


def _msm(h, names, node, nodes: dict[str, str]) -> None:
    from rich.text import Text

    if not h.reachable:
        return
    if not h.memcached_nodes:
        node.add(Text("sessions: no memcached-session-manager Manager", style="red"))
        return

    def named(ids):
        return ", ".join(f"{n} ({_who(nodes.get(n, ''), names)})" for n in ids)

    t = Text("sessions -> memcached ")
    t.append(named(_primary(h)), style="cyan")
    if h.failover_nodes:
        t.append("; failover ")
        t.append(named(h.failover_nodes))
    node.add(t)


def topology(report, width: int = 80):
    """The cluster as a rich Tree (pure: a function of the report)."""
    from rich.text import Text
    from rich.tree import Tree

    names = _names(report)
    nginx = [h for h in report.hosts if h.role == "nginx"]
    tomcats = [h for h in report.hosts if h.role == "tomcat"]
    mode = report.mode or "no mode deployed"
    title = Text(f"cluster: {len(tomcats)} Tomcats, {mode}" + (" mode" if report.mode else "") + ", ")
    title.append("healthy" if report.healthy else "UNHEALTHY", style="bold green" if report.healthy else "bold red")
    root = Tree(title, guide_style="dim")
    s = report.session
    served = (", ".join(f"{n} x{c}" for n, c in s.nodes.items()) or "nobody") if s is not None and s.nodes else ""
    front = root.add(_label(nginx[0]) if nginx else Text("no nginx host", style="red"))
    if s is not None:
        text = f"session check: {s.requests} requests, {s.failed} failed" + (f", served by {served}" if served else "")
        front.add(Text(printable(text), style="green" if s.ok else "red"))
    nodes = {n: a for h in tomcats for n, a in h.memcached_nodes}
    for h in tomcats:
        node = front.add(_label(h))
        if report.mode == "delta":
            _delta(h, tomcats, names, node)
        elif report.mode == "msm":
            _msm(h, names, node, nodes)
    if report.mode == "msm":
        items = {n: i for n, _, i in report.memcached}
        cache = root.add(Text("memcached", style="bold"))
        for n, addr in sorted(nodes.items()):
            label = Text(f"{n} {addr} on {_who(addr, names)}")
            if n in items:
                i = items[n]
                label.append(": unreachable" if i is None else f": {i} items", style="red" if i is None else "")
            if n == report.session_node:
                label.append(" (holds the check's session)", style="cyan")
            c = cache.add(label)
            keep = [h.name for h in tomcats if n in _primary(h)]
            back = [h.name for h in tomcats if n in h.failover_nodes]
            if keep:
                c.add(Text(f"sessions of {', '.join(keep)}"))
            if back:
                c.add(Text(f"failover for {', '.join(back)}", style="dim"))
    return root


def topology_text(report, width: int = 80) -> str:
    """The picture as plain text at `width` columns (what a pipe receives)."""
    from rich.console import Console

    console = Console(width=width, force_terminal=False, color_system=None, record=True, file=_Null())
    console.print(topology(report, width))
    return console.export_text()


class _Null:
    def write(self, _):
        return 0

    def flush(self):
        pass
