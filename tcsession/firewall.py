"""The cluster's ports open only to the hosts that need them (`[firewall] backend = "nftables"`).

On each Tomcat host, a table of tcsession's own (`inet tcsession`) that drops, for the cluster's
ports only, what does not come from the hosts that need them: Tomcat's HTTP port from nginx; the
cluster receiver and multicast membership (delta) from the Tomcat peers; memcached (msm) from the
Tomcats. Loopback is always accepted (the host's own checks reach its own address over it). Every
other port is left to whatever else the host runs: the table only drops, it never opens.

It is loaded at boot by a unit of tcsession's (`tcsession-firewall.service`, before the network
and the services), from a file tcsession writes and rollback removes. The file replaces the table
in one transaction (`nft -f`: declare, delete, define), so a change has no moment without rules.

firewalld is not driven: with firewalld active, its own zones also decide (a packet must pass
every table's input chain), so preflight refuses "nftables" there until firewalld is told
(documented in docs/security.md). Pure: renders text; tcsession.shell applies it.
"""

from __future__ import annotations

from tcsession.inventory import Host, Inventory, uses_multicast
from tcsession.modes import Mode

TABLE = "inet tcsession"
RULES = "/etc/tcsession/firewall.nft"
UNIT = "tcsession-firewall"
UNIT_FILE = f"/etc/systemd/system/{UNIT}.service"
PACKAGE = "nftables"


def _set(addresses) -> str:
    return "{ " + ", ".join(sorted(set(addresses), key=lambda a: tuple(int(x) for x in a.split(".")))) + " }"


def rules(inv: Inventory, host: Host, mode: Mode) -> list[tuple[str, str, int, tuple[str, ...]]]:
    """(what, protocol, port, allowed source addresses) for one Tomcat host in `mode`."""
    peers = tuple(t.address for t in inv.tomcats if t.name != host.name)
    out = [("HTTP", "tcp", host.http_port, (inv.nginx.address,))]
    if mode.cluster:
        out.append(("cluster receiver", "tcp", inv.delta.receiver_port, peers))
        if uses_multicast(inv.delta.membership):
            out.append(("multicast membership", "udp", inv.delta.multicast_port, peers))
    if mode.memcached and host.memcached:
        out.append(("memcached", "tcp", inv.msm.memcached_port, tuple(t.address for t in inv.tomcats)))
    return out


def render_rules(inv: Inventory, host: Host, mode: Mode) -> bytes:
    lines = [
        "#!/usr/sbin/nft -f",
        f"# tcsession ({inv.path.name}): {host.name}'s cluster ports, open only to the hosts that need them.",
        "# Written by tcsession deploy, removed by its rollback; loaded by tcsession-firewall.service.",
        f"table {TABLE}",
        f"delete table {TABLE}",
        f"table {TABLE} {{",
        "    chain input {",
        "        type filter hook input priority filter - 5; policy accept;",
        '        iif "lo" accept',
    ]
    for what, proto, port, allowed in rules(inv, host, mode):
        lines.append(f"        # {what}")
        if allowed:
            lines.append(f"        ip saddr {_set(allowed)} {proto} dport {int(port)} accept")
        lines.append(f"        {proto} dport {int(port)} drop")
    lines += ["    }", "}"]
    return ("\n".join(lines) + "\n").encode()


def render_unit() -> bytes:
    return f"""\
# tcsession: loads {RULES} (the cluster's ports open only to the hosts that need them).
[Unit]
Description=tcsession: the cluster's ports open only to the cluster's hosts
DefaultDependencies=no
Before=network-pre.target shutdown.target
Wants=network-pre.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/sbin/nft -f {RULES}
ExecReload=/usr/sbin/nft -f {RULES}
ExecStop=/usr/sbin/nft delete table {TABLE}

[Install]
WantedBy=multi-user.target
""".encode()
