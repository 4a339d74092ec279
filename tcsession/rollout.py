"""The rollout: what each host should end up with (its targets, decided by tcsession.plan for a
deploy and by tcsession.rollback for a rollback) turned into THE ordered plan, for both.

One order: the files (every host at once), the services beside the Tomcats (memcached, the
firewall), nginx (a node new to its site marked down until it has joined), the retirements, the
Tomcats' restarts in waves (each wave drained in nginx, one reload), then the checks of what runs
afterwards (ports, and in msm mode every memcached node from every Tomcat). Every deliberate
difference between a deploy's order and a rollback's is a field of `Order`, written down here.
How a Tomcat restart is done lives in three files: this one (when and with what: `tomcat_restarts`),
tcsession.steps (`RestartTomcat`: what it waits for and judges), tcsession.shell (its commands).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING

from tcsession import apps as applications
from tcsession import nginx, serverxml
from tcsession.errors import TcsessionError
from tcsession.facts import HostFacts
from tcsession.inventory import Inventory
from tcsession.modes import Mode
from tcsession.steps import (CheckMemcached, CheckPorts, Drain, Plan, RestartMemcached, RestartTomcat, Step,
                             StopService, UpgradeService)

if TYPE_CHECKING:
    from tcsession.plan import HostChanges


@dataclasses.dataclass(frozen=True)
class Order:
    """The deliberate differences between a deploy's order and a rollback's."""

    # True (deploy): every Tomcat host's memcached and firewall steps, one host at a time, before
    # nginx loads the new site (MSM connects to every node at start; the site may send to them).
    # False (rollback): nginx first (back to the site it had before the deploy), then each Tomcat
    # host's own steps (memcached before its Tomcat, the firewall, a stop) just before its wave;
    # those of the hosts that do not restart before the first wave.
    services_before_nginx: bool
    # True (upgrade, and its rollback): the Tomcats' waves first, then each Tomcat host's own
    # steps one host at a time (memcached: a restart empties it, while every Tomcat holds its own
    # sessions and re-stores them), then nginx last (its package restarts it).
    tomcats_first: bool = False


DEPLOY = Order(services_before_nginx=True)
ROLLBACK = Order(services_before_nginx=False)
UPGRADE = Order(services_before_nginx=False, tomcats_first=True)


def rollout(inv: Inventory, mode: Mode, kind: str, facts: dict[str, HostFacts], files: list[Step],
            services: dict[str, list[Step]], nginx_steps: list[Step], retire: list[Step],
            restart: dict[str, HostChanges], site: bytes | None, test_page: dict[str, bool],
            joining: Iterable[str] = (), order: Order = DEPLOY) -> Plan:
    """The plan. files: each host's file step (write or restore); services: per Tomcat host, the
    steps for its services besides the Tomcat itself; nginx_steps: nginx's (load the site, or stop
    it); retire: the removed Tomcats' stops; restart: the Tomcats that restart and why; site:
    nginx's site as it will be; joining: Tomcats new to that site while others serve (marked down
    until their own start, and no wave leans on them)."""
    inv = resolve_membership(inv, facts)[0]  # [delta] membership not set: the running kind (or static)
    running = {t.name for t in inv.tomcats if facts[t.name].tomcat
               and facts[t.name].active.get(facts[t.name].tomcat.unit) == "active"} - set(joining)
    steps: list[Step] = list(files)
    if order.services_before_nginx:
        for t in inv.tomcats:
            steps += services.get(t.name, [])
    if not order.tomcats_first:
        steps += nginx_steps
    steps += retire
    units = {t.name: facts[t.name].tomcat.unit for t in inv.tomcats if facts[t.name].tomcat}
    restarts = tomcat_restarts(inv, mode, restart, running, site, test_page,
                               members_now=cluster_members_now(inv, facts, running) if mode.cluster else set(),
                               joining=set(joining), units=units) if restart else []
    if not order.services_before_nginx and not order.tomcats_first:
        restarting = {s.host for s in restarts}
        for t in inv.tomcats:
            if t.name not in restarting:
                steps += services.get(t.name, [])
    for i, s in enumerate(restarts):
        if i == 0 or restarts[i - 1].wave != s.wave:
            wave = [r for r in restarts[i:] if r.wave == s.wave]
            if not order.services_before_nginx and not order.tomcats_first:
                for r in wave:
                    steps += services.get(r.host, [])
            steps += wave
    if order.tomcats_first:
        for t in inv.tomcats:
            steps += services.get(t.name, [])
        steps += nginx_steps
    if steps:
        steps += checks(inv, mode, facts, running_after(inv, facts, running, steps))
    return Plan(kind, tuple(steps))


def running_after(inv: Inventory, facts: dict[str, HostFacts], running: set[str], steps: list[Step]) -> dict[str, set[str]]:
    """Host -> the services ("nginx", "tomcat", "memcached") that run once `steps` ran: started or
    restarted by them, or running now and not stopped by them."""
    stops = {(s.host, s.unit) for s in steps if isinstance(s, StopService)}
    started = {(s.host, type(s).__name__) for s in steps} | {
        (s.host, {"nginx": "ApplyNginx", "memcached": "RestartMemcached"}.get(s.unit, "")) for s in steps
        if isinstance(s, UpgradeService)}
    out: dict[str, set[str]] = {}
    n = inv.nginx.name
    nginx_now = facts[n].active.get("nginx") == "active" if n in facts else False
    out[n] = {"nginx"} if (n, "nginx") not in stops and ((n, "ApplyNginx") in started or nginx_now) else set()
    for t in inv.tomcats:
        f = facts.get(t.name)
        layout = f.tomcat if f else None
        mine = set()
        if layout and (t.name, layout.unit) not in stops and ((t.name, "RestartTomcat") in started or t.name in running):
            mine.add("tomcat")
        if f and (t.name, "memcached") not in stops and ((t.name, "RestartMemcached") in started
                                                        or f.active.get("memcached") == "active"):
            mine.add("memcached")
        out[t.name] = mine
    return out


def wave_limit(inv: Inventory, mode: Mode) -> tuple[int, str]:
    """How many Tomcats may restart at once, and why (the preview says it).

    DeltaManager: every node holds every session, so up to half may restart while the other half
    serves (never all). BackupManager: one backup per session, so one at a time. msm: the
    sessions live in memcached, so up to half too. Bounded by `[rolling] max_unavailable`."""
    n = len(inv.tomcats)
    if mode.cluster and inv.delta.manager == "backup":
        allowed, rule = 1, "BackupManager keeps one backup per session: one node at a time"
    elif mode.cluster:
        allowed, rule = max(1, n // 2), "DeltaManager: every node holds every session, up to half at once"
    else:
        allowed, rule = max(1, n // 2), "msm: sessions are in memcached, up to half at once"
    limit = inv.rolling.limit(n)
    size = max(1, min(allowed, limit, n - 1))
    if limit < allowed:
        rule += f"; [rolling] max_unavailable = {json.dumps(inv.rolling.max_unavailable)} allows {limit}"
    return size, rule


def waves(inv: Inventory, mode: Mode, restart: Iterable[str], running: set[str],
          served: set[str] | None = None, members_now: set[str] | None = None) -> list[tuple[str, ...]]:
    """The Tomcats that restart, in waves (inventory order). Each wave leaves at least one running
    node outside it when any runs (one nginx sends to, when `served` names them); when none runs
    (or, in the cluster modes, none is a cluster member yet: `members_now`), the first node starts
    alone, so that the cluster forms around it and the next waves receive its state (nodes
    starting together with nobody else would ask each other for a state none has yet)."""
    size, _ = wave_limit(inv, mode)
    todo = [t.name for t in inv.tomcats if t.name in set(restart)]
    up = set(running)
    members = set(running if members_now is None else members_now)
    out: list[tuple[str, ...]] = []
    while todo:
        serving = (up & served) or up if served is not None else up
        k = 1 if not up or (mode.cluster and not members) else min(size, len(todo))
        while k > 1 and not (serving - set(todo[:k])):
            k -= 1
        wave, todo = tuple(todo[:k]), todo[k:]
        out.append(wave)
        up |= set(wave)
        members |= set(wave)
    return out


def joining_nodes(inv: Inventory, site_now: bytes | None, running: set[str], restarting: set[str]) -> list[str]:
    """The Tomcats joining a serving cluster (one that nginx's site as it is now sends to runs):
    not in that site, and not running or restarting in this plan (a Tomcat that runs but will not
    restart keeps serving as it does)."""
    listed = nginx.servers(site_now.decode()) if site_now is not None else set()
    new = [t.name for t in inv.tomcats if (t.address, t.http_port) not in listed]
    if not any(t.name in running for t in inv.tomcats if t.name not in new):
        return []
    return [n for n in new if n not in running or n in restarting]


def tomcat_restarts(inv: Inventory, mode: Mode, restart: dict[str, HostChanges], running: set[str],
                    site: bytes | None, test_page: dict[str, bool] | None = None,
                    members_now: set[str] | None = None, joining: set[str] | None = None,
                    units: dict[str, str] | None = None) -> list[RestartTomcat]:
    """The Tomcats that restart, in waves (`waves`). While another node runs (and nginx has a
    site), a wave's nodes are out of service in nginx together during their restart (one reload);
    with DeltaManager each waits for the session state a node outside the wave sends, and in the
    cluster modes each waits until it sees as members every other Tomcat that is one by then: the
    restarted ones and `members_now` (default: every running one) that do not restart later. A
    restart that changes an application's WAR reads, besides its own log, the logs of the other
    running Tomcats (`units`: host -> its Tomcat unit) since its restart: an old-version peer that
    cannot read what the new version replicates to it stops the rollout there too."""
    members_now = set(running) if members_now is None else set(members_now)
    up = set(running)
    later = set(restart)
    out = []
    # Only the nodes the site sends to are drained (a rollback's restored site may not list a node).
    listed = nginx.servers(site.decode()) if site is not None else set()
    served = {t.name for t in inv.tomcats if (t.address, t.http_port) in listed} if site is not None else None
    planned = waves(inv, mode, restart, running, served, members_now)
    pending = set(joining or ())  # joining nodes not started yet: kept down in every drain's sites
    for number, wave in enumerate(planned, 1):
        peers = up - set(wave)
        drained = None
        pending -= set(wave)
        address = lambda n: (inv.host(n).address, inv.host(n).http_port)  # noqa: E731
        out_of_service = [address(n) for n in wave if address(n) in listed]
        if out_of_service and peers:
            still_down = [address(t.name) for t in inv.tomcats if t.name in pending]
            back = nginx.drain_all(site.decode(), still_down).encode() if still_down else site
            drained = Drain(inv.nginx.name, nginx.drain_all(site.decode(), out_of_service + still_down).encode(), back,
                            inv.rolling.drain_timeout)
        after = up | set(wave)
        later -= set(wave)
        # members: restarted by now (this plan), or members now and not restarting (or not yet):
        # a node later in the plan still runs its old configuration, a member only if it is one now
        seen = (after - later) | (members_now & after)
        for name in wave:
            t, c = inv.host(name), restart[name]
            members = len(seen - {name}) if mode.cluster else 0
            new_war = any(f.path.endswith(".war") for f in c.deferred)
            watched = tuple((p, (units or {})[p]) for p in sorted(peers, key=[x.name for x in inv.tomcats].index)
                            if new_war and p in (units or {}))
            out.append(RestartTomcat(t.name, c.restart, c.unit, t.address, t.http_port, c.digest,
                                     (test_page or {}).get(t.name, True), drained,
                                     bool(peers) and mode.waits_for_state(inv),
                                     wave=number, waves=len(planned), wave_hosts=wave, members=members,
                                     files=c.deferred, app_contexts=c.app_contexts, peers=watched,
                                     clear=tuple(applications.derived_dirs(c.layout, c.deferred)) if c.layout else ()))
        up = after
    return out


def checks(inv: Inventory, mode: Mode, facts: dict[str, HostFacts], after: dict[str, set[str]] | None = None) -> list:
    """After the changes: every expected port of what then runs listening, and in msm mode every
    memcached node that runs reachable from every Tomcat that runs. after: host -> the services
    that run then ("nginx", "tomcat", "memcached"; None: all of them)."""
    def runs(host: str, what: str) -> bool:
        return after is None or what in after.get(host, set())

    out: list = []
    ports = mode.expected_ports(inv)
    for h in inv.hosts:
        mine = tuple(e for e in ports if e.host == h.name and runs(h.name, e.unit))
        if not mine:
            continue
        f = facts.get(h.name)
        unit = f.tomcat.unit if f is not None and f.tomcat is not None else "tomcat"
        names = (("nginx", "nginx"),) if h.role == "nginx" else (("tomcat", unit), ("memcached", "memcached"))
        out.append(CheckPorts(h.name, "the cluster needs them", mine, names))
    nodes = tuple(n for n, t in zip(mode.memcached_nodes(inv), [t for t in inv.tomcats if t.memcached])
                  if runs(t.name, "memcached"))
    if nodes:
        out += [CheckMemcached(t.name, "MSM needs every node from every Tomcat", nodes)
                for t in inv.tomcats if runs(t.name, "tomcat")]
    return out


def running_clusters(inv: Inventory, facts: dict[str, HostFacts], running: set[str]) -> dict[str, dict]:
    """The `running` Tomcats whose server.xml now carries tcsession's Cluster: name ->
    serverxml.read_cluster's summary (a server.xml that cannot be read counts as none). (Given
    every Tomcat as `running`: each one configured so, running or not.)"""
    out = {}
    for t in inv.tomcats:
        f = facts.get(t.name)
        layout = f.tomcat if f else None
        data = f.content(layout.server_xml) if layout else None
        if t.name not in running or not data:
            continue
        try:
            cluster = serverxml.read_cluster(data, f"{t.name}:{layout.server_xml}")
        except TcsessionError:
            continue
        if cluster and cluster["managed"]:
            out[t.name] = cluster
    return out


def resolve_membership(inv: Inventory, facts: dict[str, HostFacts]) -> tuple[Inventory, str | None]:
    """The inventory with its membership kind decided, and a note saying so (None: it was set).

    `[delta] membership` set: as written (a kind other than the running cluster's is a switch).
    Not set: the kind tcsession's Cluster already has in the Tomcats' server.xml (running or not:
    an existing cluster never changes kind unasked; multicast wins if both are found, the kind
    every version of tcsession before this one wrote), else "static" (a new cluster: tcsession
    knows every member, and static membership has no fixed sleep at each start)."""
    if inv.delta.membership is not None:
        return inv, None
    kinds = {c["membership"] for c in running_clusters(inv, facts, {t.name for t in inv.tomcats}).values()}
    kind = "multicast" if "multicast" in kinds else "static" if "static" in kinds else None
    if kind is None:
        kind, note = "static", ("[delta] membership not set: static, the default for a new cluster (no "
                                "multicast needed; every Tomcat lists its peers)")
    else:
        note = (f"[delta] membership not set: {kind}, the kind this cluster runs (kept; set it to switch, "
                "see docs/operations.md)")
    return dataclasses.replace(inv, delta=dataclasses.replace(inv.delta, membership=kind)), note


#: A switch of membership kind goes through bridges, one rolling pass each, so that every node
#: restarted sees every running peer as a member (and they see it): a node on a kind sees only the
#: nodes on the same kind or a neighbouring one in this chain. McastService + a
#: StaticMembershipInterceptor listing every node ("bridge-multicast") is seen by multicast nodes
#: through multicast and by interceptor-listed nodes through the interceptor; StaticMembershipService +
#: that interceptor ("bridge-static") answers StaticMembershipService's own pings (its provider adds
#: only peers that answer them) and is listed by the interceptor too. Tomcat 7 and 8.5: static
#: membership is that interceptor already, one bridge (not measured: no lab; static -> multicast
#: there relies on the static node's 5 s heartbeat to re-add a node on the bridge, a race).
CHAIN = ("multicast", "bridge-multicast", "bridge-static", "static")
LEGACY_CHAIN = ("multicast", "bridge-multicast", "static")

#: What a pass on each kind writes into the Cluster, for the dry run and the progress.
PASS_WRITES = {
    "multicast": "McastService alone (the multicast kind)",
    "bridge-multicast": "McastService kept, and a StaticMembershipInterceptor (with TcpPingInterceptor) listing "
                        "every node: seen by multicast and by listing nodes",
    "bridge-static": "StaticMembershipService, and a StaticMembershipInterceptor (with TcpPingInterceptor) listing "
                     "every node: seen by StaticMembershipService and by listing nodes",
    "static": "StaticMembershipService alone (the static kind)",
}


def flavour(cluster: dict) -> str:
    """A Cluster's kind of membership as the switch's chain names it (serverxml.read_cluster's summary)."""
    return f"bridge-{cluster['membership']}" if cluster.get("bridge") else cluster["membership"]


def chain(inv: Inventory, facts: dict[str, HostFacts]) -> tuple[str, ...]:
    majors = {facts[t.name].tomcat.major for t in inv.tomcats if facts.get(t.name) and facts[t.name].tomcat}
    return LEGACY_CHAIN if majors and min(majors) < 9 else CHAIN


def compatible(a: str, b: str, kinds: tuple[str, ...] = CHAIN) -> bool:
    """Nodes on kinds a and b see each other as members (equal, or neighbours in the chain)."""
    if a == b:
        return True
    return a in kinds and b in kinds and abs(kinds.index(a) - kinds.index(b)) == 1


def running_flavours(inv: Inventory, facts: dict[str, HostFacts]) -> dict[str, str]:
    """Running Tomcat -> the kind of membership of its server.xml (serverxml.read_cluster)."""
    running = {t.name for t in inv.tomcats if facts.get(t.name) and facts[t.name].tomcat
               and facts[t.name].active.get(facts[t.name].tomcat.unit) == "active"}
    return {n: flavour(c) for n, c in running_clusters(inv, facts, running).items()
            if c["membership"] in ("multicast", "static")}


def started_on_older(inv: Inventory, facts: dict[str, HostFacts], names: Iterable[str]) -> set[str]:
    """Of `names`, the Tomcats that last started with another configuration than their files now
    hold (its stamp differs: a deploy wrote the files and stopped before restarting it)."""
    from tcsession.plan import config_digest, tomcat_config_paths  # (tcsession.plan imports this module)

    out = set()
    for n in names:
        f = facts[n]
        applied = f.applied(f.tomcat.unit)
        if applied and applied != config_digest({p: f.content(p) for p in tomcat_config_paths(f.tomcat)}):
            out.add(n)
    return out


def membership_passes(inv: Inventory, facts: dict[str, HostFacts]) -> list[str]:
    """The kinds of the rolling passes that take the running Tomcats to the inventory's membership:
    one step along the chain each, from the running node farthest from it (a pass only restarts
    the nodes it changes); [the inventory's kind] when no running node is on another."""
    target = inv.delta.membership
    kinds = chain(inv, facts)
    flavours = running_flavours(inv, facts)
    if target not in kinds or any(k not in kinds for k in flavours.values()):
        return [target]
    t = kinds.index(target)
    at = {n: kinds.index(k) for n, k in flavours.items()}
    # a pass writes every node's file first: a node whose file has a bridge but that was not
    # restarted since still runs the kind one step farther from the target (a node at the target
    # that was not restarted runs its neighbour: the plain restart the deploy owes it is that step)
    for n in started_on_older(inv, facts, [n for n, i in at.items() if 0 < i < len(kinds) - 1]):
        at[n] += -1 if t > at[n] else 1
    now = [i for i in at.values() if i != t]
    if not now:
        return [target]
    farthest = max(now, key=lambda i: abs(i - t))
    step = 1 if t > farthest else -1
    return [kinds[i] for i in range(farthest + step, t + step, step)]


def membership_switch(inv: Inventory, facts: dict[str, HostFacts]) -> str | None:
    """A note when this deploy switches running Tomcats to the other kind of membership (or from a
    switch's bridge), saying its passes, or None."""
    flavours = running_flavours(inv, facts)
    other = sorted(n for n, k in flavours.items() if k != inv.delta.membership)
    if not other:
        return None
    was = sorted({flavours[n] for n in other})
    passes = membership_passes(inv, facts)
    return (f"switching membership {'/'.join(was)} -> {inv.delta.membership} on a running cluster "
            f"({', '.join(other)}): {len(passes)} rolling pass(es), each through the drained restarts, "
            f"so that every restarted node sees its running peers: "
            + "; ".join(f"pass {i}/{len(passes)} {k}: {PASS_WRITES.get(k, k)}" for i, k in enumerate(passes, 1))
            + " (docs/operations.md)")


def switch_refusal(inv: Inventory, facts: dict[str, HostFacts], switching: str, note: str | None) -> str:
    """The one line a deploy that would switch membership kind stops with when --switch-membership
    was not given (`switching`: membership_switch's note; `note`: resolve_membership's, None when
    the key is set): what to do depends on whether a switch was left half done (a bridge runs)."""
    kind = inv.delta.membership
    if any(k.startswith("bridge-") for k in running_flavours(inv, facts).values()):
        return (f'{inv.path}: [delta] membership = "{kind}": a switch of membership was left half done (a bridge '
                f"is running): {switching}; give --switch-membership to finish it, or set the key to the kind it "
                "came from and give --switch-membership to go back (nothing was changed)")
    if note is None:
        return (f'{inv.path}: [delta] membership = "{kind}": {switching}; to switch, give --switch-membership; to '
                "keep the running kind, remove the key (nothing was changed)")
    return (f"{inv.path}: [delta] membership not set, and the running Tomcats use both kinds (a switch left half "
            f"done): {switching}; set the key to the kind you want and give --switch-membership (nothing was changed)")


def cluster_members_now(inv: Inventory, facts: dict[str, HostFacts], running: set[str]) -> set[str]:
    """The running Tomcats that are members of the cluster a restarted node joins: their server.xml
    now carries tcsession's Cluster with the inventory's kind of membership, or a kind that sees it
    (a neighbour in a switch's chain: `compatible`) (a Tomcat still on its
    package's server.xml, or in msm mode, is no member, so a node restarted before it cannot wait
    to see it). A changed multicast address or port is not compared: document, do not guess."""
    kinds = chain(inv, facts)
    return {n for n, c in running_clusters(inv, facts, running).items()
            if compatible(flavour(c), inv.delta.membership, kinds)}
