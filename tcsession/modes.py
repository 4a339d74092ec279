"""The session mode as a value: what differs between delta (Tomcat's own cluster) and msm
(memcached-session-manager), decided once from the command line or from what a host carries.

Planning, the checks after a restart, the expected ports and status all ask the Mode instead of
comparing strings.
"""

from __future__ import annotations

import dataclasses

from tcsession.errors import TcsessionError
from tcsession.inventory import Host, Inventory, uses_multicast
from tcsession.probes import reachable_on


@dataclasses.dataclass(frozen=True)
class ExpectedPort:
    host: str
    proto: str
    address: str
    port: int
    unit: str  # "nginx", "tomcat" (the host's Tomcat unit) or "memcached"


def port_listening(e: ExpectedPort, listeners) -> bool:
    """TCP: reachable on the expected address (or a wildcard); UDP (multicast): the port bound."""
    if e.proto == "udp":
        return any(l.proto == "udp" and l.port == e.port for l in listeners)
    return reachable_on(listeners, e.address, e.port)


@dataclasses.dataclass(frozen=True)
class Mode:
    name: str  # "delta" | "msm"
    cluster: bool  # a SimpleTcpCluster in server.xml (receiver, membership)
    memcached: bool  # memcached beside each Tomcat, MSM's Manager and jars

    def packages(self, host: Host) -> tuple[str, ...]:
        """What the mode adds to a Tomcat host's packages."""
        return ("memcached",) if self.memcached and host.memcached else ()

    def routing(self, inv: Inventory) -> str:
        """By jvmRoute for the delta cluster and sticky MSM; round robin for non-sticky MSM."""
        return "roundrobin" if self.memcached and not inv.msm.sticky else "jvmroute"

    def jvm_route(self, inv: Inventory, host: Host) -> str | None:
        return host.jvm_route if self.cluster or inv.msm.sticky else None

    def waits_for_state(self, inv: Inventory) -> bool:
        """A restarted node receives every session from a peer (DeltaManager) before it serves."""
        return self.cluster and inv.delta.manager == "delta"

    def advice(self, inv: Inventory) -> list[str]:
        """What deploy and status recommend at this size (not a refusal)."""
        n = len(inv.tomcats)
        if self.cluster and inv.delta.manager == "delta" and n > 4:
            return [f"{n} Tomcats with DeltaManager: every node keeps a copy of every session and every change "
                    f"is sent to the {n - 1} others, so memory and replication traffic grow with the cluster "
                    "(the Tomcat cluster how-to advises against DeltaManager beyond about four nodes); "
                    'set manager = "backup" in [delta] for BackupManager, which keeps one backup copy per '
                    "session (rolling restarts then go one node at a time)"]
        return []

    def memcached_nodes(self, inv: Inventory) -> tuple[tuple[str, int], ...]:
        if not self.memcached:
            return ()
        return tuple((t.address, inv.msm.memcached_port) for t in inv.tomcats if t.memcached)

    def expected_ports(self, inv: Inventory) -> list[ExpectedPort]:
        out = [ExpectedPort(inv.nginx.name, "tcp", inv.nginx.address, inv.nginx.http_port, "nginx")]
        if inv.tls:
            out.append(ExpectedPort(inv.nginx.name, "tcp", inv.nginx.address, inv.tls.https_port, "nginx"))
        for t in inv.tomcats:
            out.append(ExpectedPort(t.name, "tcp", t.address, t.http_port, "tomcat"))
            if self.memcached and t.memcached:
                out.append(ExpectedPort(t.name, "tcp", t.address, inv.msm.memcached_port, "memcached"))
            if self.cluster:
                out.append(ExpectedPort(t.name, "tcp", t.address, inv.delta.receiver_port, "tomcat"))
                if uses_multicast(inv.delta.membership):
                    out.append(ExpectedPort(t.name, "udp", inv.delta.multicast_address,
                                            inv.delta.multicast_port, "tomcat"))
        return out


DELTA = Mode("delta", cluster=True, memcached=False)
MSM = Mode("msm", cluster=False, memcached=True)
# What status judges when the Tomcats carry neither mode's configuration.
NONE = Mode("none", cluster=False, memcached=False)
MODES = {m.name: m for m in (DELTA, MSM)}


def mode_named(name: str | Mode) -> Mode:
    if isinstance(name, Mode):
        return name
    try:
        return MODES[name]
    except KeyError:
        raise TcsessionError(f"--mode={name}: unknown or not available; use one of {', '.join(MODES)}") from None


def missing_ports(inv: Inventory, mode: Mode, listeners_by_host: dict) -> list[ExpectedPort]:
    return [e for e in mode.expected_ports(inv) if not port_listening(e, listeners_by_host[e.host])]


# --------------------------------------------------------------------------- the mode a deploy uses

#: What a deploy in the other mode takes out (docs/modes.md: switching modes).
REMOVES = {
    ("delta", "msm"): "the delta Cluster from every Tomcat's server.xml (the Engine's own jvmRoute put back): "
                      "the Tomcats stop replicating sessions to each other",
    ("msm", "delta"): "memcached-session-manager's Manager, the jars tcsession placed and the jvmRoute marker "
                      "(memcached keeps running with its listen address)",
}
SWITCH_FLAG = "--switch-mode"


def switch_line(old: str, new: str) -> str:
    """The plan's first line when a deploy switches modes."""
    return f"switching mode {old} -> {new}: this deploy removes {REMOVES[(old, new)]}"


def choose(inv: Inventory, given: str | None, switch: bool = False) -> Mode:
    """The mode a deploy uses, from --mode and the inventory's [cluster] mode. Pure; UsageError
    (exit 2) when a --mode differs from the inventory's without the explicit switch, or when
    neither names a mode. (What a switch removes depends on what the hosts run: check_running.)"""
    from tcsession.errors import UsageError

    where = f"{inv.path}: [cluster] mode"
    if given is None and inv.mode is None:
        raise UsageError(f'deploy needs a mode: set [cluster] mode = "delta" (or "msm") in {inv.path}, '
                         "or give --mode=delta or --mode=msm")
    if given is None or inv.mode is None or given == inv.mode:
        return mode_named(given or inv.mode)
    if not switch:
        raise UsageError(f'--mode={given} differs from {where} = "{inv.mode}": a deploy in {given} mode removes '
                         f"{REMOVES[(inv.mode, given)]}; to switch, set [cluster] mode = \"{given}\" (or give "
                         f"{SWITCH_FLAG} with --mode={given}); to deploy {inv.mode}, drop --mode")
    return mode_named(given)


def check_running(inv: Inventory, mode: Mode, running: str | None, switch: bool) -> str | None:
    """Against what the hosts run (status.detect_mode): a deploy whose mode differs from theirs is a
    switch, made only when explicit (--switch-mode) if the inventory names a mode; the switch's
    first line, or None. (Inventories without [cluster] mode keep --mode's meaning of before.)"""
    from tcsession.errors import UsageError

    if running is None or running == mode.name:
        return None
    if inv.mode is not None and not switch:
        raise UsageError(f'the Tomcats run {running} mode and this deploy is {mode.name} ({inv.path}: [cluster] '
                         f'mode = "{inv.mode}"): it would remove {REMOVES[(running, mode.name)]}; to switch, give '
                         f"{SWITCH_FLAG}; to keep {running}, set [cluster] mode = \"{running}\" (nothing was changed)")
    return switch_line(running, mode.name)
