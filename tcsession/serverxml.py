"""Tomcat server.xml for the delta mode: one managed <Cluster> in the Engine, and its jvmRoute.

Pure: bytes in, bytes out (see :mod:`tcsession.xmlpatch` for how untouched bytes stay identical).

What :func:`patch_server_xml` manages, and nothing else:

- the ``jvmRoute`` attribute of ``Server/Service/Engine``;
- exactly one ``<Cluster>`` directly inside that Engine, preceded by a marker comment
  (:data:`MARKER`). The marker is how a later run recognises the block as ours.
- msm non-sticky: Tomcat's PersistentValve as the default Host's last child, preceded by
  :data:`VALVE_MARKER` (:func:`patch_session_valve`: one request per session at a time in a
  Tomcat, which MSM 2.3.2's lock alone does not give).

Decisions, so that patching is predictable:

- An Engine holds one Cluster. If the operator wrote one (no marker), the deploy replaces it in
  place, adds the marker, and the diff shows it; ``spec=None`` does not touch an unmarked Cluster.
  The saved copy of the file (rollback) is what brings an operator's own Cluster back.
- A managed Cluster is replaced where it stands. A new one goes right after the stock file's
  commented-out ``<Cluster .../>`` example; without that comment, before the first element child
  of the Engine (above the comments that introduce it), or as the only child.
- ``spec=None`` removes the managed Cluster with its marker, and puts back the Engine's jvmRoute
  as it was before tcsession set it (the marker records an earlier value, if there was one).
  Stock file -> spec -> None gives the stock file back byte for byte.
- Several Clusters in the Engine, a Cluster inside a Host, or several Engines: an error, never a
  guess.

Tomcat facts used (sources: Apache's cluster-howto and config/cluster-*.html for 7.0 to 11.0,
and the Tomcat sources):

- Tomcat 7: ``MessageDispatch15Interceptor`` (the 7.0 default). Its ``JvmRouteBinderValve``
  still sends the session-id change as a ``SessionIDMessage`` that only
  ``JvmRouteSessionIDBinderListener`` applies on the other nodes (its 7.0 Javadoc: that listener
  MUST be configured on all nodes), so the Tomcat 7 block has it. Both classes are gone from 8.5
  on, where the valve uses ``Manager.changeSessionId`` and the managers replicate the change.
- Static membership, Tomcat 9 and newer: ``StaticMembershipService`` (9.0.11+) with a
  ``LocalMember`` (uniqueId only: host and port come from the Receiver) and one ``Member`` per
  peer; ``channelStartOptions`` stays at its default (config/cluster-membership.html).
- Static membership, Tomcat 7 and 8.5: ``channelStartOptions="3"`` (no multicast), then
  ``TcpPingInterceptor`` (staticOnly) and ``TcpFailureDetector`` before a
  ``StaticMembershipInterceptor`` holding ``LocalMember`` and ``Member`` elements (the interceptor
  warns at start when either is missing above it; config/cluster-interceptor.html).
- ``uniqueId`` is 16 bytes written ``{b0,b1,...}`` without spaces, parsed with
  ``Byte.parseByte`` (so -128..127); here derived from the node's address and jvmRoute, so every
  node computes the same id for a peer and a second run writes the same bytes.
- With static membership the Receiver uses ``autoBind="0"`` (Tomcat raises it to one attempt):
  the peers' ``Member`` entries name that exact port, so a busy port must fail loudly instead of
  silently moving to the next one. Multicast announces the bound port, so ``autoBind="100"``.
- ``McastService bind="<node address>"`` needs ``-Djava.net.preferIPv4Stack=true`` in the JVM
  options (lab.md); the module that writes JVM options sets it, not this one.
- The Receiver never uses ``address="auto"``: it resolves the host name, which Debian and Ubuntu
  map to 127.0.1.1, and the peers never connect.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

from lxml import etree

from tcsession.errors import TcsessionError
from tcsession.xmlpatch import (
    is_marker,
    marker_before,
    XmlDocument,
    element_children,
    indent_of,
    indent_unit,
    insert_after,
    insert_before,
    append_child,
    remove_node,
)

__all__ = [
    "ClusterSpec",
    "SESSION_VALVE",
    "patch_session_valve",
    "MARKER",
    "SUPPORTED_MAJORS",
    "patch_engine_route",
    "patch_listeners",
    "patch_remote_ip",
    "patch_server_xml",
    "read_cluster",
    "render_cluster",
    "unique_id",
]

SUPPORTED_MAJORS = (7, 8, 9, 10, 11)
MARKER = "tcsession: managed cluster (tcsession deploy, mode delta); edits here are replaced"
_MARKER_HEAD = MARKER.split(" (")[0]
ROUTE_MARKER = "tcsession: managed jvmRoute (tcsession deploy, mode msm); edits here are replaced"
_ROUTE_MARKER_HEAD = ROUTE_MARKER.split(" (")[0]
REMOTE_IP_MARKER = "tcsession: managed RemoteIpValve ([tls]: nginx terminates HTTPS); edits here are replaced"
_REMOTE_IP_MARKER_HEAD = REMOTE_IP_MARKER.split(" (")[0]
REMOTE_IP_VALVE = "org.apache.catalina.valves.RemoteIpValve"
_PRIOR_ROUTE = re.compile(r'; Engine jvmRoute before tcsession: "([^"]*)"')
_ROUTE_OK = re.compile(r"^[A-Za-z0-9_-]+$")
VALVE_MARKER = ("tcsession: one request per session at a time in this Tomcat (tcsession deploy, mode msm "
                "non-sticky); edits here are replaced")
_VALVE_MARKER_HEAD = VALVE_MARKER.split(" (")[0]
#: Tomcat's PersistentValve, used for its per-session Semaphore only: with a Manager that is not a
#: StoreManager (MSM's) it loads and stores nothing (PersistentValve.invoke checks
#: ``manager instanceof StoreManager``); its semaphore (fair, blocking) lets one request per session
#: id at a time through this Tomcat. In the Host, so that it encloses MSM's RequestTrackingHostValve
#: (which MSM adds to the Host when the context starts, after the valves of server.xml).
SESSION_VALVE = "org.apache.catalina.valves.PersistentValve"

# class names
SIMPLE_TCP_CLUSTER = "org.apache.catalina.ha.tcp.SimpleTcpCluster"
DELTA_MANAGER = "org.apache.catalina.ha.session.DeltaManager"
BACKUP_MANAGER = "org.apache.catalina.ha.session.BackupManager"
GROUP_CHANNEL = "org.apache.catalina.tribes.group.GroupChannel"
MCAST_SERVICE = "org.apache.catalina.tribes.membership.McastService"
STATIC_MEMBERSHIP_SERVICE = "org.apache.catalina.tribes.membership.StaticMembershipService"
STATIC_MEMBER = "org.apache.catalina.tribes.membership.StaticMember"
NIO_RECEIVER = "org.apache.catalina.tribes.transport.nio.NioReceiver"
REPLICATION_TRANSMITTER = "org.apache.catalina.tribes.transport.ReplicationTransmitter"
POOLED_PARALLEL_SENDER = "org.apache.catalina.tribes.transport.nio.PooledParallelSender"
_INTERCEPTORS = "org.apache.catalina.tribes.group.interceptors."
TCP_PING_INTERCEPTOR = _INTERCEPTORS + "TcpPingInterceptor"
TCP_FAILURE_DETECTOR = _INTERCEPTORS + "TcpFailureDetector"
STATIC_MEMBERSHIP_INTERCEPTOR = _INTERCEPTORS + "StaticMembershipInterceptor"
MESSAGE_DISPATCH_INTERCEPTOR = _INTERCEPTORS + "MessageDispatchInterceptor"
ENCRYPT_INTERCEPTOR = _INTERCEPTORS + "EncryptInterceptor"
ENCRYPT_ALGORITHM = "AES/GCM/NoPadding"  # written explicitly: Tomcat changed its default in 9.0.121/10.1.58/11.0.25
MESSAGE_DISPATCH15_INTERCEPTOR = _INTERCEPTORS + "MessageDispatch15Interceptor"
REPLICATION_VALVE = "org.apache.catalina.ha.tcp.ReplicationValve"
JVM_ROUTE_BINDER_VALVE = "org.apache.catalina.ha.session.JvmRouteBinderValve"
CLUSTER_SESSION_LISTENER = "org.apache.catalina.ha.session.ClusterSessionListener"
JVM_ROUTE_SESSION_ID_BINDER_LISTENER = "org.apache.catalina.ha.session.JvmRouteSessionIDBinderListener"


@dataclass(frozen=True)
class ClusterSpec:
    """What one node's Cluster looks like. ``peers`` are the *other* nodes (static membership)."""

    tomcat_major: int  # 7, 8 (8.5), 9, 10, 11
    address: str  # this node's own address (Receiver address; McastService bind)
    jvm_route: str
    manager: str = "delta"  # "delta" | "backup"
    membership: str = "multicast"  # "multicast" | "static"
    peers: tuple[tuple[str, str], ...] = ()  # static membership: (address, jvm_route) of the OTHER nodes
    multicast_address: str = "228.0.0.4"
    multicast_port: int = 45564
    receiver_port: int = 4000
    channel_send_options: int = 6
    state_transfer_timeout: int = 60
    encrypt_key: str = ""  # hex (64 characters: AES-256): an EncryptInterceptor upstream of TcpFailureDetector
    # a switch's bridge (tcsession.rollout.membership_passes): the membership service of `membership`
    # kept, and every node also listed by a StaticMembershipInterceptor (BRIDGE_FLAGS), so that a node
    # on either neighbouring kind sees it as a member; needs `peers`
    bridge: bool = False


#: The bridge's TcpPingInterceptor and StaticMembershipInterceptor send their own messages (pings,
#: "member started/stopped") with these option flags: 0x0001 (Channel.SEND_OPTIONS_BYTE_MESSAGE) so
#: that a node without those interceptors (plain multicast or StaticMembershipService) takes them as
#: raw bytes no listener accepts, instead of failing to deserialize them and logging an ERROR for each;
#: 0x1000 and 0x2000, bits no Tomcat option uses, so that GroupChannel's option-flag check sees no
#: conflict between the two (nor with MessageDispatchInterceptor's 8).
BRIDGE_FLAGS = {"ping": "4097", "static": "8193"}
#: A bridge's channel heartbeat (ms; Tomcat's default 5000). A node that restarts on the multicast
#: bridge announces itself with McastService's member (a random uniqueId), which a peer on the static
#: bridge does not find in its list: that peer adds it back only when its TcpFailureDetector's
#: heartbeat finds the listed address alive again. Every 0.5 s, that is before the restarted node
#: asks for the session state (McastService sleeps 2 s first), so that no update the peer takes
#: meanwhile misses it. Measured in the lab: 2.5 s after the stop with the default (a race).
BRIDGE_HEARTBEAT = "500"


# --------------------------------------------------------------------------- validation


def _check_address(value: str, what: str, source: str) -> None:
    if not isinstance(value, str) or not value or value != value.strip() or " " in value:
        raise TcsessionError(f"{source}: {what} {value!r} is not an address; give the node's own IP address")
    if value.lower() in ("auto", "localhost"):
        raise TcsessionError(
            f"{source}: {what} {value!r} would resolve to a loopback address on Debian and Ubuntu; "
            f"give the node's own IP address"
        )
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return  # a host name: Tomcat resolves it
    if ip.is_loopback or ip.is_unspecified or ip.is_multicast:
        raise TcsessionError(
            f"{source}: {what} {value} cannot be advertised to other nodes; give the node's own IP address"
        )


def _check_route(value: str, what: str, source: str) -> None:
    if not isinstance(value, str) or not _ROUTE_OK.match(value):
        raise TcsessionError(
            f"{source}: {what} {value!r} is not a usable jvmRoute; use letters, digits, '-' and '_' only"
        )


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_port(value: int, what: str, source: str) -> None:
    if not _is_int(value) or not 1 <= value <= 65535:
        raise TcsessionError(f"{source}: {what} {value!r} is not a port number (1-65535)")


def _validate(spec: ClusterSpec, source: str) -> None:
    if spec.tomcat_major not in SUPPORTED_MAJORS:
        raise TcsessionError(
            f"{source}: Tomcat {spec.tomcat_major!r} is not supported; use 7, 8 (8.5), 9, 10 or 11"
        )
    if spec.manager not in ("delta", "backup"):
        raise TcsessionError(f"{source}: manager {spec.manager!r} is unknown; use 'delta' or 'backup'")
    if spec.membership not in ("multicast", "static"):
        raise TcsessionError(
            f"{source}: membership {spec.membership!r} is unknown; use 'multicast' or 'static'"
        )
    _check_address(spec.address, "node address", source)
    _check_route(spec.jvm_route, "jvm_route", source)
    _check_port(spec.receiver_port, "receiver_port", source)
    _check_port(spec.multicast_port, "multicast_port", source)
    if not _is_int(spec.channel_send_options) or spec.channel_send_options < 0:
        raise TcsessionError(
            f"{source}: channel_send_options {spec.channel_send_options!r} must be a whole number "
            f"(6: synchronous with acknowledgement, 8: asynchronous)"
        )
    if not _is_int(spec.state_transfer_timeout) or spec.state_transfer_timeout < 1:
        raise TcsessionError(
            f"{source}: state_transfer_timeout {spec.state_transfer_timeout!r} must be a whole "
            f"number of seconds above 0 (Tomcat's default is 60)"
        )
    try:
        if not ipaddress.ip_address(spec.multicast_address).is_multicast:
            raise ValueError
    except ValueError:
        raise TcsessionError(
            f"{source}: multicast_address {spec.multicast_address!r} is not a multicast address "
            f"(224.0.0.0/4); the default is 228.0.0.4"
        ) from None
    seen_addresses = {spec.address}
    seen_routes = {spec.jvm_route}
    for peer in spec.peers:
        if not (isinstance(peer, (tuple, list)) and len(peer) == 2):
            raise TcsessionError(f"{source}: peer {peer!r} must be (address, jvm_route)")
        address, route = peer
        _check_address(address, "peer address", source)
        _check_route(route, "peer jvm_route", source)
        if address in seen_addresses:
            raise TcsessionError(
                f"{source}: address {address} appears twice among this node and its peers; "
                f"list each other node once and leave this node out of peers"
            )
        if route in seen_routes:
            raise TcsessionError(
                f"{source}: jvm_route {route!r} appears twice among this node and its peers; "
                f"every node needs its own jvm_route"
            )
        seen_addresses.add(address)
        seen_routes.add(route)
    if spec.encrypt_key:
        if spec.tomcat_major < 9:
            raise TcsessionError(
                f"{source}: encrypt = true needs Tomcat 9.0.14 or newer (AES/GCM in EncryptInterceptor); "
                f"this is Tomcat {spec.tomcat_major}: upgrade it or set encrypt = false in [delta]")
        if not re.fullmatch(r"[0-9a-fA-F]{32}|[0-9a-fA-F]{48}|[0-9a-fA-F]{64}", spec.encrypt_key):
            raise TcsessionError(f"{source}: the cluster key is not 32, 48 or 64 hex characters")
    if spec.bridge and not spec.peers:
        raise TcsessionError(f"{source}: a membership bridge needs the other nodes (peers)")
    if spec.bridge and spec.membership == "static" and spec.tomcat_major < 9:
        raise TcsessionError(f"{source}: Tomcat {spec.tomcat_major}'s static membership is interceptors already: "
                             "no static bridge")
    if spec.membership == "static" or spec.bridge:
        if not spec.peers:
            raise TcsessionError(
                f"{source}: static membership needs the other nodes (peers); add them or use multicast"
            )
        ids = {unique_id(spec.address, spec.jvm_route)}
        for address, route in spec.peers:
            ids.add(unique_id(address, route))
        if len(ids) != len(spec.peers) + 1:  # pragma: no cover - 112-bit collision
            raise TcsessionError(f"{source}: two nodes got the same cluster uniqueId; rename a jvm_route")


def unique_id(address: str, jvm_route: str) -> str:
    """Tribes uniqueId of a node, ``{b0,...,b15}``: 16 bytes from its address and jvmRoute.

    Every node derives the same id for a given peer, so LocalMember on one node equals the
    Member entry the others write for it. Bytes are kept in 0..127 (Tomcat parses each with
    ``Byte.parseByte``).
    """
    digest = hashlib.sha256(f"tcsession-cluster-member {address} {jvm_route}".encode()).digest()
    return "{" + ",".join(str(b & 0x7F) for b in digest[:16]) + "}"


# --------------------------------------------------------------------------- rendering


def _cluster_tree(spec: ClusterSpec):
    """The Cluster as nested ``(tag, [(attr, value), ...], [children])`` tuples."""
    legacy = spec.tomcat_major < 9  # 7 and 8.5: static membership by interceptors
    static = spec.membership == "static"
    bridge = spec.bridge
    interceptors = (static and legacy) or bridge  # TcpPingInterceptor and StaticMembershipInterceptor
    send = str(spec.channel_send_options)

    def el(tag, attrs=(), children=()):
        return (tag, list(attrs), list(children))

    def member(tag, address=None, route=None, own=False):
        attrs = [("className", STATIC_MEMBER)]
        if not own:
            attrs += [("host", address), ("port", str(spec.receiver_port))]
        attrs.append(("uniqueId", unique_id(address, route)))
        return el(tag, attrs)

    static_members = []
    if static or bridge:
        static_members.append(member("LocalMember", spec.address, spec.jvm_route, own=True))
        static_members += [member("Member", a, r) for a, r in spec.peers]

    cluster_attrs = [("className", SIMPLE_TCP_CLUSTER), ("channelSendOptions", send)]
    if static and legacy:
        cluster_attrs.append(("channelStartOptions", "3"))

    if spec.manager == "delta":
        manager = el("Manager", [
            ("className", DELTA_MANAGER),
            ("expireSessionsOnShutdown", "false"),
            ("notifyListenersOnReplication", "true"),
            ("stateTransferTimeout", str(spec.state_transfer_timeout)),
        ])
    else:
        manager = el("Manager", [("className", BACKUP_MANAGER), ("mapSendOptions", send)])

    channel = []
    if not static:
        channel.append(el("Membership", [
            ("className", MCAST_SERVICE),
            ("address", spec.multicast_address),
            ("port", str(spec.multicast_port)),
            ("frequency", "500"),
            ("dropTime", "3000"),
            ("bind", spec.address),
        ]))
    elif not legacy:
        channel.append(el("Membership", [("className", STATIC_MEMBERSHIP_SERVICE)], static_members))
    channel.append(el("Receiver", [
        ("className", NIO_RECEIVER),
        ("address", spec.address),
        ("port", str(spec.receiver_port)),
        ("autoBind", "0" if static or bridge else "100"),
        ("selectorTimeout", "5000"),
        ("maxThreads", "6"),
    ]))
    channel.append(el("Sender", [("className", REPLICATION_TRANSMITTER)],
                      [el("Transport", [("className", POOLED_PARALLEL_SENDER)])]))
    if interceptors:
        channel.append(el("Interceptor", [("className", TCP_PING_INTERCEPTOR), ("staticOnly", "true")]
                          + ([("optionFlag", BRIDGE_FLAGS["ping"])] if bridge else [])))
    if spec.encrypt_key:  # before TcpFailureDetector, which writes straight to the members
        channel.append(el("Interceptor", [("className", ENCRYPT_INTERCEPTOR),
                                          ("encryptionAlgorithm", ENCRYPT_ALGORITHM),
                                          ("encryptionKey", spec.encrypt_key)]))
    channel.append(el("Interceptor", [("className", TCP_FAILURE_DETECTOR)]))
    if interceptors:
        # a bridge's interceptor names no LocalMember: the channel's local member stays its membership
        # service's (McastService gets its host and port only when the local member is not a StaticMember;
        # StaticMembershipService's pings carry its own LocalMember)
        channel.append(el("Interceptor", [("className", STATIC_MEMBERSHIP_INTERCEPTOR)]
                          + ([("optionFlag", BRIDGE_FLAGS["static"])] if bridge else []),
                          static_members[1:] if bridge else static_members))
    dispatch = MESSAGE_DISPATCH15_INTERCEPTOR if spec.tomcat_major == 7 else MESSAGE_DISPATCH_INTERCEPTOR
    channel.append(el("Interceptor", [("className", dispatch)]))

    children = [
        manager,
        el("Channel", [("className", GROUP_CHANNEL)] + ([("heartbeatSleeptime", BRIDGE_HEARTBEAT)] if bridge else []),
           channel),
        el("Valve", [("className", REPLICATION_VALVE), ("filter", "")]),
        el("Valve", [("className", JVM_ROUTE_BINDER_VALVE)]),
    ]
    if spec.tomcat_major == 7:
        children.append(el("ClusterListener", [("className", JVM_ROUTE_SESSION_ID_BINDER_LISTENER)]))
    children.append(el("ClusterListener", [("className", CLUSTER_SESSION_LISTENER)]))
    return el("Cluster", cluster_attrs, children)


def _attr_text(value: str) -> str:
    return (value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("\t", "&#9;").replace("\n", "&#10;").replace("\r", "&#13;"))


def _render(node, indent: str, unit: str, width: int) -> str:
    tag, attrs, children = node
    parts = [f'{name}="{_attr_text(value)}"' for name, value in attrs]
    close = ">" if children else "/>"
    one_line = f"<{tag}" + "".join(" " + p for p in parts)
    if len(parts) <= 1 or len(indent) + len(one_line) + len(close) <= width:
        head = one_line
    else:  # Tomcat's own layout: one attribute per line, aligned under the first
        pad = "\n" + indent + " " * (len(tag) + 2)
        head = f"<{tag} " + parts[0] + "".join(pad + p for p in parts[1:])
    if not children:
        return head + close
    inner = "".join("\n" + indent + unit + _render(c, indent + unit, unit, width) for c in children)
    return head + close + inner + "\n" + indent + f"</{tag}>"


def render_cluster(spec: ClusterSpec, indent: str = "      ", unit: str = "  ", width: int = 100) -> str:
    """The ``<Cluster>`` block as text: first line unindented, the others indented for ``indent``."""
    return _render(_cluster_tree(spec), indent, unit, width)


# --------------------------------------------------------------------------- locating


def _find_engine(root, source: str):
    if root.tag != "Server":
        raise TcsessionError(
            f"{source}: the root element is <{root.tag}>, expected <Server>; is this Tomcat's "
            f"server.xml? (tcsession changed nothing)"
        )
    engines = [e for s in element_children(root, "Service") for e in element_children(s, "Engine")]
    if not engines:
        raise TcsessionError(
            f"{source}: no <Engine> inside <Service>; restore Tomcat's server.xml, whose Service "
            f"holds the Engine (tcsession changed nothing)"
        )
    if len(engines) > 1:
        raise TcsessionError(
            f"{source}: {len(engines)} <Service> elements have an <Engine>; tcsession manages a "
            f"server.xml with one Engine: configure this cluster by hand (tcsession changed nothing)"
        )
    return engines[0]


def _is_marker(node) -> bool:
    return is_marker(node, _MARKER_HEAD)


def _marker_before(node):
    return marker_before(node, _MARKER_HEAD)


def _marker_text(prior_route: str | None, text: str = MARKER) -> str:
    if prior_route is not None:
        encoded = quote(prior_route, safe="")
        if "--" in encoded:
            encoded = encoded.replace("-", "%2D")
        text += f'; Engine jvmRoute before tcsession: "{encoded}"'
    return f" {text} "


def _prior_route(marker) -> str | None:
    m = _PRIOR_ROUTE.search(marker.text or "")
    return unquote(m.group(1)) if m else None


def _restore_route(engine, prior: str | None) -> None:
    """The Engine's jvmRoute as it was before tcsession set it (none, or the recorded value)."""
    if prior is None:
        engine.attrib.pop("jvmRoute", None)
    else:
        engine.set("jvmRoute", prior)


def _canonical_place(engine, cluster_comment: bool = True):
    """Where a new Cluster goes: ("after", node), ("before", node) or ("append", engine); without
    `cluster_comment`, where a new first element goes (before the comments that introduce the
    Engine's first element)."""
    for node in engine if cluster_comment else ():
        if node.tag is etree.Comment and "<Cluster" in (node.text or ""):
            return "after", node
    elements = element_children(engine)
    if not elements:
        return "append", engine
    ref = elements[0]
    # keep the comments that introduce the first element attached to it
    while True:
        prev = ref.getprevious()
        if prev is None or prev.tag is not etree.Comment or _is_marker(prev):
            break
        if (prev.tail or "").count("\n") > 1 or (prev.tail or "").strip():
            break
        ref = prev
    return "before", ref


# --------------------------------------------------------------------------- public API


def patch_server_xml(data: bytes, spec: ClusterSpec | None, source: str) -> bytes:
    """server.xml with the managed Cluster and jvmRoute for ``spec`` (or removed, for None).

    Raises :class:`TcsessionError` (one line naming ``source``) on malformed XML, a file without
    exactly one Engine, or an unusable spec. Idempotent; untouched bytes are kept.
    """
    if spec is not None:
        _validate(spec, source)
    doc = XmlDocument(data, source)
    engine = _find_engine(doc.root, source)
    clusters = element_children(engine, "Cluster")
    if len(clusters) > 1:
        raise TcsessionError(
            f"{source}: the <Engine> holds {len(clusters)} <Cluster> elements; Tomcat uses one: "
            f"remove the extra ones (tcsession changed nothing)"
        )
    existing = clusters[0] if clusters else None
    markers = [n for n in engine if _is_marker(n)]
    own_marker = _marker_before(existing) if existing is not None else None
    stray = [m for m in markers if m is not own_marker]
    if own_marker is not None:
        prior = _prior_route(own_marker)
    elif markers:
        prior = _prior_route(markers[0])
    else:
        prior = engine.get("jvmRoute")

    if spec is None:
        if not markers:
            return data  # nothing of ours here
        for marker in stray:
            remove_node(marker)
        if own_marker is not None:
            remove_node(existing)
            remove_node(own_marker)
        _restore_route(engine, prior)
        return doc.to_bytes()

    for host in element_children(engine, "Host"):
        if element_children(host, "Cluster"):
            raise TcsessionError(
                f"{source}: <Host name=\"{host.get('name', '')}\"> has its own <Cluster>; tcsession "
                f"manages the Engine's Cluster: remove the Host's one (tcsession changed nothing)"
            )
    for marker in stray:
        remove_node(marker)

    marker_text = _marker_text(prior)
    unit = indent_unit(engine)
    if existing is not None:
        indent = indent_of(existing)
        cluster = doc.fragment(render_cluster(spec, indent, unit))
        cluster.tail = existing.tail
        engine.replace(existing, cluster)
        if own_marker is not None:
            if own_marker.text != marker_text:
                own_marker.text = marker_text
        else:
            insert_before(cluster, etree.Comment(marker_text))
    else:
        how, where = _canonical_place(engine)
        if how == "append":
            indent = indent_of(engine) + unit
        else:
            indent = indent_of(where)
        cluster = doc.fragment(render_cluster(spec, indent, unit))
        if how == "after":
            insert_after(where, cluster)
        elif how == "before":
            insert_before(where, cluster)
        else:
            append_child(engine, cluster)
        insert_before(cluster, etree.Comment(marker_text))
    engine.set("jvmRoute", spec.jvm_route)
    return doc.to_bytes()


def patch_engine_route(data: bytes, route: str | None, source: str) -> bytes:
    """server.xml with the Engine's jvmRoute set to ``route`` without a Cluster (msm sticky
    mode), or put back as it was before tcsession set it (None).

    A marker comment (:data:`ROUTE_MARKER`, first inside the Engine) records the earlier value,
    as the delta mode's Cluster marker does. Apply :func:`patch_server_xml` with ``None``
    first to leave the delta mode, and this with ``None`` before entering it. Idempotent;
    stock file -> route -> None gives the stock file back byte for byte.
    """
    if route is not None:
        _check_route(route, "jvm_route", source)
    doc = XmlDocument(data, source)
    engine = _find_engine(doc.root, source)
    markers = [n for n in engine if is_marker(n, _ROUTE_MARKER_HEAD)]
    prior = _prior_route(markers[0]) if markers else engine.get("jvmRoute")
    if route is None:
        if not markers:
            return data
        for marker in markers:
            remove_node(marker)
        _restore_route(engine, prior)
        return doc.to_bytes()
    text = _marker_text(prior, ROUTE_MARKER)
    for marker in markers[1:]:
        remove_node(marker)
    if markers:
        if markers[0].text != text:
            markers[0].text = text
    else:
        if len(engine):  # right below the Engine's start tag
            insert_before(engine[0], etree.Comment(text))
        else:
            append_child(engine, etree.Comment(text))
    if engine.get("jvmRoute") != route:
        engine.set("jvmRoute", route)
    return doc.to_bytes()


def read_cluster(data: bytes, source: str) -> dict | None:
    """Summary of the Engine's Cluster for a status view, or None when there is none.

    Keys: ``managed`` (our marker is there), ``jvm_route``, ``manager`` (class name),
    ``membership`` ("multicast", "static", "cloud" or the class name; a bridge: its service's kind),
    ``bridge`` (a switch's bridge: that service and a StaticMembershipInterceptor), ``members`` (static:
    ``host:port`` of the listed members), ``multicast`` ("address:port"), ``receiver_address``,
    ``receiver_port``, ``channel_send_options`` (attribute values as written, or None),
    ``encryption_key`` (the EncryptInterceptor's key, or None without one).
    """
    doc = XmlDocument(data, source)
    engine = _find_engine(doc.root, source)
    clusters = element_children(engine, "Cluster")
    if not clusters:
        return None
    cluster = clusters[0]
    manager = cluster.find("Manager")
    channel = cluster.find("Channel")
    membership_el = channel.find("Membership") if channel is not None else None
    receiver = channel.find("Receiver") if channel is not None else None
    static_interceptor = None
    if channel is not None:
        for interceptor in channel.findall("Interceptor"):
            if (interceptor.get("className") or "").endswith(".StaticMembershipInterceptor"):
                static_interceptor = interceptor
    membership_class = membership_el.get("className") if membership_el is not None else None
    members_from = None
    # a switch's bridge: a membership service started beside a StaticMembershipInterceptor
    bridge = static_interceptor is not None and cluster.get("channelStartOptions") != "3" and bool(
        membership_class and membership_class.endswith((".McastService", ".StaticMembershipService")))
    if bridge:
        membership = "multicast" if membership_class.endswith(".McastService") else "static"
        members_from = static_interceptor
    elif static_interceptor is not None:
        membership, members_from = "static", static_interceptor
    elif membership_class is None or membership_class.endswith(".McastService"):
        membership = "multicast"
    elif membership_class.endswith(".StaticMembershipService"):
        membership, members_from = "static", membership_el
    elif membership_class.endswith(".CloudMembershipService"):
        membership = "cloud"
    else:
        membership = membership_class
    multicast = None
    if membership == "multicast":
        mc = membership_el if membership_el is not None else None
        address = mc.get("address", "228.0.0.4") if mc is not None else "228.0.0.4"
        port = mc.get("port", "45564") if mc is not None else "45564"
        multicast = f"{address}:{port}"
    members = []
    if members_from is not None:
        members = [f"{m.get('host')}:{m.get('port')}" for m in members_from.findall("Member")]
    encrypt = next((i for i in (channel.findall("Interceptor") if channel is not None else ())
                    if (i.get("className") or "") == ENCRYPT_INTERCEPTOR), None)
    return {
        "managed": _marker_before(cluster) is not None,
        "jvm_route": engine.get("jvmRoute"),
        "manager": manager.get("className") if manager is not None else None,
        "membership": membership,
        "bridge": bridge,  # True: a switch's bridge (tcsession.rollout.flavour)
        "members": members,
        "multicast": multicast,
        "receiver_address": receiver.get("address") if receiver is not None else None,
        "receiver_port": receiver.get("port") if receiver is not None else None,
        "channel_send_options": cluster.get("channelSendOptions"),
        # the EncryptInterceptor's key ("" when it has none), or None without the interceptor
        "encryption_key": (encrypt.get("encryptionKey") or "") if encrypt is not None else None,
    }


# --------------------------------------------------------------------------- listeners


def _is_ajp(connector) -> bool:
    protocol = connector.get("protocol", "HTTP/1.1")
    return protocol.upper().startswith("AJP") or ".ajp." in protocol.lower()


def patch_listeners(data: bytes, address: str, http_port: int, source: str) -> bytes:
    """server.xml with the HTTP Connector on ``http_port`` bound to the node's own ``address``
    (nginx reaches it there, nothing else does) and the shutdown port disabled or on loopback.

    - every live (not commented-out) HTTP Connector whose ``port`` is ``http_port`` gets
      ``address="<address>"``; none on that port is an error (nginx would reach nothing);
    - ``<Server port="-1">`` (Debian's) is kept; any other shutdown port gets
      ``address="127.0.0.1"`` unless it already names a loopback address (Tomcat's default is
      ``localhost``, which a changed /etc/hosts can move);
    - AJP Connectors are never added, and an operator's own is left as it is.

    Idempotent; every other byte is kept (the saved copy of the file is what rollback restores).
    """
    _check_address(address, "node address", source)
    _check_port(http_port, "http_port", source)
    doc = XmlDocument(data, source)
    root = doc.root
    _find_engine(root, source)
    shutdown = root.get("port", "8005")
    if shutdown.strip() != "-1":
        current = root.get("address")
        try:
            loopback = current is not None and ipaddress.ip_address(current).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            root.set("address", "127.0.0.1")
    http = [c for s in element_children(root, "Service") for c in element_children(s, "Connector")
            if not _is_ajp(c) and c.get("port", "").strip() == str(http_port)]
    if not http:
        raise TcsessionError(
            f"{source}: no HTTP <Connector port=\"{http_port}\"> in the Service; nginx proxies to port "
            f"{http_port}: add that Connector or set http_port in the inventory (tcsession changed nothing)")
    for connector in http:
        if connector.get("address") != address:
            connector.set("address", address)
    return doc.to_bytes()


def _find_host(engine, source: str):
    hosts = element_children(engine, "Host")
    wanted = engine.get("defaultHost")
    named = [h for h in hosts if h.get("name") == wanted]
    if named:
        return named[0]
    if len(hosts) == 1:
        return hosts[0]
    raise TcsessionError(
        f"{source}: the Engine's defaultHost {wanted!r} names none of its {len(hosts)} <Host> elements; "
        f"fix defaultHost (tcsession changed nothing)")


def patch_session_valve(data: bytes, on: bool, source: str) -> bytes:
    """server.xml with (``on``) or without tcsession's per-session valve in the Engine's default
    Host (:data:`SESSION_VALVE`, preceded by :data:`VALVE_MARKER`), as the Host's last child.

    Why (msm non-sticky): MSM 2.3.2 keeps one in-memory copy of a session while requests use it
    on a Tomcat, and concurrent requests of one session on the same Tomcat get past its memcached
    lock (a lookup it counts as the container's takes no reference; a lookup racing the end of the
    previous request re-adds the session after its lock was released): measured, 1 to 3 updates
    lost in 200 with 10 concurrent clients. With this valve they queue in the Tomcat instead, and
    each request takes MSM's lock and loads the session from memcached.

    Idempotent; ``on=False`` removes exactly what ``on=True`` added (a stock file comes back byte
    for byte); an operator's own PersistentValve (no marker) is left alone.
    """
    doc = XmlDocument(data, source)
    engine = _find_engine(doc.root, source)
    host = _find_host(engine, source)
    markers = [n for n in host if is_marker(n, _VALVE_MARKER_HEAD)]
    ours = [m.getnext() for m in markers if m.getnext() is not None and m.getnext().tag == "Valve"
            and m.getnext().get("className") == SESSION_VALVE]
    if not on:
        if not markers:
            return data
        for node in ours + markers:
            remove_node(node)
        return doc.to_bytes()
    if len(markers) == 1 and len(ours) == 1 and dict(ours[0].attrib) == {"className": SESSION_VALVE}:
        return data
    for node in ours + markers:
        remove_node(node)
    children = list(host)
    valve = etree.Element("Valve", className=SESSION_VALVE)
    marker = etree.Comment(f" {VALVE_MARKER} ")
    if children:
        insert_after(children[-1], valve)
    else:
        append_child(host, valve)
    insert_before(valve, marker)
    return doc.to_bytes()


def patch_remote_ip(data: bytes, proxy_address: str | None, source: str) -> bytes:
    """server.xml with a managed RemoteIpValve first in the Engine, trusting only nginx at
    ``proxy_address`` (or removed, for None): Tomcat then takes the scheme from nginx's
    X-Forwarded-Proto (so `request.isSecure()` is true behind HTTPS and the session cookie gets its
    Secure flag) and the client's address from X-Forwarded-For, and from no other sender (the
    application sees them; Tomcat's own access log shows the client only with its AccessLogValve's
    requestAttributesEnabled="true", the operator's to set). Tomcat 7 to 11 have the valve. Idempotent; stock -> valve -> None gives the stock file back byte for byte."""
    if proxy_address is not None:
        _check_address(proxy_address, "the nginx address", source)
    doc = XmlDocument(data, source)
    engine = _find_engine(doc.root, source)
    markers = [n for n in engine if is_marker(n, _REMOTE_IP_MARKER_HEAD)]
    valves = [marker.getnext() for marker in markers
              if marker.getnext() is not None and marker.getnext().get("className") == REMOTE_IP_VALVE]
    if proxy_address is None:
        if not markers:
            return data
        for node in valves + markers:
            remove_node(node)
        return doc.to_bytes()
    attrs = {"className": REMOTE_IP_VALVE, "internalProxies": proxy_address.replace(".", "\\."),
             "remoteIpHeader": "X-Forwarded-For", "protocolHeader": "X-Forwarded-Proto",
             "protocolHeaderHttpsValue": "https"}
    if valves and len(markers) == 1 and all(valves[0].get(k) == v for k, v in attrs.items()):
        return data  # already so
    for node in valves + markers:
        remove_node(node)
    text = "<Valve " + " ".join(f'{k}="{_attr_text(v)}"' for k, v in attrs.items()) + " />"
    valve = doc.fragment(text)
    how, where = _canonical_place(engine, cluster_comment=False)
    if how == "before":
        insert_before(where, valve)
    else:
        append_child(engine, valve)
    insert_before(valve, etree.Comment(f" {REMOTE_IP_MARKER} "))
    return doc.to_bytes()
