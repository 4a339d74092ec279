"""server.xml patching (tcsession.serverxml) and the byte-preserving XML layer (tcsession.xmlpatch).

Inputs: Apache's stock server.xml of each supported Tomcat line, verbatim (checked by sha256),
from the shared fixtures directory (override with TCSESSION_TOMCAT_FIXTURES), plus Debian's
packaged one from tests/data when present.

Golden files: tests/golden/serverxml/<version>-<manager>-<membership>.xml. The tests compare
against the committed files. To regenerate them after an intended change, run

    TCSESSION_REGEN_GOLDEN=1 .venv/bin/pytest tests/test_serverxml.py -q

and review the diff of tests/golden/serverxml/ before committing.
"""

from __future__ import annotations

import difflib
import gc
import hashlib
import os
import re
from io import BytesIO
from pathlib import Path

import pytest
from lxml import etree

from tcsession.errors import TcsessionError
from tcsession.serverxml import (
    patch_engine_route,
    MARKER,
    ClusterSpec,
    patch_server_xml,
    read_cluster,
    unique_id,
)
from tcsession.xmlpatch import (
    XmlDocument,
    append_child,
    insert_after,
    insert_before,
    parse_xml,
    remove_node,
    serialize_xml,
)

TESTS = Path(__file__).resolve().parent
FIXTURES = Path(os.environ.get("TCSESSION_TOMCAT_FIXTURES", TESTS.parent.parent / "shared" / "fixtures" / "tomcat"))
GOLDEN = TESTS / "golden" / "serverxml"
DEBIAN_SERVER_XML = TESTS / "data" / "debian-bookworm-tomcat10" / "server.xml"
# Debian 11's tomcat9 package file, as installed on a bullseye lab host.
DEBIAN9_SERVER_XML = TESTS / "data" / "debian-bullseye-tomcat9" / "server.xml"
REGEN = os.environ.get("TCSESSION_REGEN_GOLDEN") == "1"

# version directory -> (tomcat_major, sha256 of the stock server.xml, from the fixtures' README)
VERSIONS = {
    "7.0.76": (7, "f730e9a99cafcf9605b8e9aff6f2cc779530b579d611e4cdff21b6222ecdd94c"),
    "8.5.100": (8, "9849b6d8921c3f93353da7dff48e266292fe5c8da026077a2e3d5303eac304f0"),
    "9.0.121": (9, "61a387d09173adabe22f0f6af7589304d666be3dc78b95280c2e73e02f0fbe90"),
    "10.1.59": (10, "5771ecf807db1a8390f6918b55f20e8565c0c8252f23ddde257e091e5a31a2ff"),
    "11.0.25": (11, "e5a951708e88609f1f2ba093944b358d204c651147c1e4db575b0d9306139482"),
}
COMBOS = [(m, s) for m in ("delta", "backup") for s in ("multicast", "static")]
NODE_ADDRESS, NODE_ROUTE = "10.0.0.11", "tomcat1"
PEERS = (("10.0.0.12", "tomcat2"), ("10.0.0.13", "tomcat3"))

# Cluster classes that exist in each Tomcat line (tomcat.md, lab.md; Tomcat sources)
COMMON_CLASSES = {
    "org.apache.catalina.ha.tcp.SimpleTcpCluster",
    "org.apache.catalina.ha.session.DeltaManager",
    "org.apache.catalina.ha.session.BackupManager",
    "org.apache.catalina.tribes.group.GroupChannel",
    "org.apache.catalina.tribes.membership.McastService",
    "org.apache.catalina.tribes.membership.StaticMember",
    "org.apache.catalina.tribes.transport.nio.NioReceiver",
    "org.apache.catalina.tribes.transport.ReplicationTransmitter",
    "org.apache.catalina.tribes.transport.nio.PooledParallelSender",
    "org.apache.catalina.tribes.group.interceptors.TcpFailureDetector",
    "org.apache.catalina.tribes.group.interceptors.TcpPingInterceptor",
    "org.apache.catalina.tribes.group.interceptors.StaticMembershipInterceptor",
    "org.apache.catalina.tribes.group.interceptors.MessageDispatchInterceptor",
    "org.apache.catalina.ha.tcp.ReplicationValve",
    "org.apache.catalina.ha.session.JvmRouteBinderValve",
    "org.apache.catalina.ha.session.ClusterSessionListener",
}
ONLY_7 = {
    "org.apache.catalina.tribes.group.interceptors.MessageDispatch15Interceptor",
    "org.apache.catalina.ha.session.JvmRouteSessionIDBinderListener",
}
FROM_9 = {"org.apache.catalina.tribes.membership.StaticMembershipService"}
CLASSES = {7: COMMON_CLASSES | ONLY_7, 8: COMMON_CLASSES, 9: COMMON_CLASSES | FROM_9,
           10: COMMON_CLASSES | FROM_9, 11: COMMON_CLASSES | FROM_9}


def stock(version: str) -> bytes:
    path = FIXTURES / version / "server.xml"
    if not path.is_file():
        pytest.fail(f"missing fixture {path}; set TCSESSION_TOMCAT_FIXTURES to the stock files' directory")
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == VERSIONS[version][1], f"{path} is not the verbatim stock file"
    return data


def spec_for(major: int, manager: str = "delta", membership: str = "multicast", **kw) -> ClusterSpec:
    kw.setdefault("peers", PEERS)
    return ClusterSpec(major, NODE_ADDRESS, NODE_ROUTE, manager=manager, membership=membership, **kw)


def source_for(version: str) -> str:
    return f"tomcat1:/etc/tomcat{version.split('.')[0]}/server.xml"


def inputs():
    """(id, bytes, major) of every server.xml the properties are checked on."""
    out = [(v, stock(v), VERSIONS[v][0]) for v in VERSIONS]
    out.append(("debian-tomcat10", DEBIAN_SERVER_XML.read_bytes(), 10))
    out.append(("debian-tomcat9", DEBIAN9_SERVER_XML.read_bytes(), 9))
    return out


INPUT_IDS = list(VERSIONS) + ["debian-tomcat10", "debian-tomcat9"]


def input_named(name: str):
    for ident, data, major in inputs():
        if ident == name:
            return data, major
    raise KeyError(name)


def all_comments(data: bytes) -> list[str]:
    tree = etree.parse(BytesIO(data), etree.XMLParser(resolve_entities=False, no_network=True))
    return [c.text for c in tree.xpath("//comment()")]


def is_marker_text(text: str) -> bool:
    return text.strip().startswith("tcsession: managed cluster")


def shape(node):
    """Structure of a tree, ignoring whitespace-only text (for "only managed nodes differ")."""
    if node.tag is etree.Comment:
        return ("#comment", node.text)
    return (node.tag, sorted(node.attrib.items()), (node.text or "").strip(),
            [shape(c) for c in node], (node.tail or "").strip())


def without_managed(data: bytes):
    root = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))
    engine = root.find("Service/Engine")
    for node in list(engine):
        if node.tag == "Cluster" or (node.tag is etree.Comment and is_marker_text(node.text or "")):
            engine.remove(node)
    engine.attrib.pop("jvmRoute", None)
    return shape(root)


def cluster_classes(data: bytes) -> set[str]:
    root = etree.fromstring(data)
    cluster = root.find("Service/Engine/Cluster")
    return {el.get("className") for el in cluster.iter() if isinstance(el.tag, str) and el.get("className")}


# --------------------------------------------------------------------------- xmlpatch


@pytest.mark.parametrize("version", list(VERSIONS))
@pytest.mark.parametrize("name", ["server.xml", "context.xml"])
def test_parse_serialize_is_byte_identical(version, name):
    data = (FIXTURES / version / name).read_bytes()
    prefix, root, suffix = parse_xml(data, f"{version}/{name}")
    gc.collect()  # the parsed document lives as long as the caller keeps prefix
    assert prefix.startswith(b"<?xml") and data.endswith(suffix) and suffix.strip() == b""
    assert serialize_xml(prefix, root, suffix) == data
    assert XmlDocument(data, name).to_bytes() == data


def test_serialize_xml_of_a_tree_built_by_hand_is_plain_lxml():
    root = etree.fromstring(b"<a  x='1'\n/>")
    assert serialize_xml(b"<!-- p -->\n", root, b"\n") == b'<!-- p -->\n<a x="1"/>\n'


def test_plain_lxml_would_not_be_byte_identical():
    """Why xmlpatch exists: lxml alone reformats multi-line start tags of the stock files."""
    data = stock("10.1.59")
    _, root, _ = parse_xml(data, "x")
    body = etree.tostring(root)
    assert body not in data
    multi_line = b'<Connector port="8080" protocol="HTTP/1.1"\n'
    assert multi_line in data and multi_line not in body


@pytest.mark.parametrize("path", sorted((TESTS / "data").glob("**/*.xml")), ids=lambda p: p.name)
def test_roundtrip_other_xml_samples(path):
    """CRLF, ISO-8859-1, DOCTYPE with internal subset, entity references, namespace prefixes."""
    data = path.read_bytes()
    doc = XmlDocument(data, path.name)
    assert doc.to_bytes() == data
    new = etree.Element(doc.root.tag)  # same namespace as the root, no redundant xmlns
    append_child(doc.root, new)
    assert doc.to_bytes().count(b"xmlns") == data.count(b"xmlns")
    remove_node(new)
    assert doc.to_bytes() == data


def test_edits_touch_only_their_bytes():
    data = (b'<?xml version="1.0"?>\r\n<!-- top -->\r\n<a x = \'1\'  y="2"\r\n   z="&quot;3&quot;">\r\n'
            b'  <b>t &amp; <![CDATA[<raw>]]> &#65;</b>\r\n  <c/>\r\n</a>\r\n')
    doc = XmlDocument(data, "t.xml")
    a = doc.root
    a.set("x", "one")           # changed value keeps its quote style
    del a.attrib["y"]           # removed with its whitespace
    a.set("w", 'q"<')           # new one escaped and appended
    c = a.find("c")
    d = etree.Element("d")
    insert_after(c, d)
    out = doc.to_bytes()
    assert out == (b'<?xml version="1.0"?>\r\n<!-- top -->\r\n<a x = \'one\'\r\n   z="&quot;3&quot;"'
                   b' w="q&quot;&lt;">\r\n  <b>t &amp; <![CDATA[<raw>]]> &#65;</b>\r\n  <c/>\r\n  <d/>\r\n</a>\r\n')
    remove_node(d)
    a.set("x", "1")
    a.set("y", "2")
    del a.attrib["w"]
    # y is back with its old value: written where and how it was (lxml's attribute order is ignored)
    assert doc.to_bytes() == data


def test_insert_before_and_remove_are_inverse():
    data = b"<a>\n  <b/>\n\n  <!-- about c -->\n  <c/>\n</a>\n"
    doc = XmlDocument(data, "t.xml")
    ref = doc.root[1]  # the comment
    new = doc.fragment("<n k=\"v\">\n    <m/>\n  </n>")
    insert_before(ref, new)
    assert doc.to_bytes() == b"<a>\n  <b/>\n\n  <n k=\"v\">\n    <m/>\n  </n>\n  <!-- about c -->\n  <c/>\n</a>\n"
    remove_node(new)
    assert doc.to_bytes() == data


def test_self_closing_parent_gains_children():
    doc = XmlDocument(b"<a>\n  <b x=\"1\" />\n</a>", "t.xml")
    append_child(doc.root[0], etree.Element("c"))
    assert doc.to_bytes() == b"<a>\n  <b x=\"1\">\n    <c/>\n  </b>\n</a>"


def test_parse_error_is_one_line_naming_the_source():
    with pytest.raises(TcsessionError) as err:
        parse_xml(b"<a>\n<b>\n</a>\n", "host1:/etc/x.xml")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("host1:/etc/x.xml: not well-formed XML at line 3")
    assert msg.endswith("fix the file or restore it (tcsession changed nothing)")


# --------------------------------------------------------------------------- golden files


@pytest.mark.parametrize("manager,membership", COMBOS)
@pytest.mark.parametrize("version", list(VERSIONS))
def test_golden(version, manager, membership):
    major = VERSIONS[version][0]
    out = patch_server_xml(stock(version), spec_for(major, manager, membership), source_for(version))
    golden = GOLDEN / f"{version}-{manager}-{membership}.xml"
    if REGEN:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_bytes(out)
    assert golden.is_file(), f"{golden} missing: run with TCSESSION_REGEN_GOLDEN=1 and review"
    assert out == golden.read_bytes()


# --------------------------------------------------------------------------- properties


@pytest.mark.parametrize("manager,membership", COMBOS)
@pytest.mark.parametrize("name", INPUT_IDS)
def test_properties(name, manager, membership):
    data, major = input_named(name)
    spec = spec_for(major, manager, membership)
    out = patch_server_xml(data, spec, "src")

    # idempotent
    assert patch_server_xml(out, spec, "src") == out
    # undo gives the input back, byte for byte
    assert patch_server_xml(out, None, "src") == data
    # every comment of the input is still there, in order; ours is the only new one
    assert [c for c in all_comments(out) if not is_marker_text(c)] == all_comments(data)
    assert sum(is_marker_text(c) for c in all_comments(out)) == 1
    # only the managed nodes differ
    assert without_managed(out) == without_managed(data)

    # the diff: the Engine line changes, and one block (marker + Cluster) is added
    old, new = data.decode().splitlines(), out.decode().splitlines()
    ops = [op for op in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes() if op[0] != "equal"]
    assert len(ops) == 2, ops
    (tag1, i1, i2, j1, j2), (tag2, k1, k2, l1, l2) = ops
    assert (tag1, i2 - i1, j2 - j1) == ("replace", 1, 1)
    assert old[i1].strip() == '<Engine name="Catalina" defaultHost="localhost">'
    assert new[j1] == old[i1][:-1] + f' jvmRoute="{NODE_ROUTE}">'
    assert tag2 == "insert" and k1 == k2
    block = new[l1:l2]
    assert block[0].strip() == f"<!-- {MARKER} -->"
    assert block[1].strip().startswith("<Cluster ")
    assert block[-1].strip() == "</Cluster>"
    indent = block[0][: len(block[0]) - len(block[0].lstrip())]
    assert all(line.startswith(indent) for line in block)
    assert block[-1] == indent + "</Cluster>"

    # versions: only classes that exist in this Tomcat line
    classes = cluster_classes(out)
    assert classes <= CLASSES[major], classes - CLASSES[major]
    if major >= 8:
        assert b"MessageDispatch15Interceptor" not in out
        assert b"JvmRouteSessionIDBinderListener" not in out
    else:
        assert "org.apache.catalina.tribes.group.interceptors.MessageDispatch15Interceptor" in classes

    # the Receiver advertises the node's own address, never auto
    root = etree.fromstring(out)
    cluster = root.find("Service/Engine/Cluster")
    receiver = cluster.find("Channel/Receiver")
    assert receiver.get("address") == NODE_ADDRESS
    assert b'"auto"' not in out
    assert root.find("Service/Engine").get("jvmRoute") == NODE_ROUTE
    assert cluster.get("channelSendOptions") == "6"


@pytest.mark.parametrize("name", INPUT_IDS)
def test_spec_none_on_a_file_without_our_cluster_changes_nothing(name):
    data, _ = input_named(name)
    assert patch_server_xml(data, None, "src") == data


CHANGES = [
    ({"channel_send_options": 6}, {"channel_send_options": 2}),
    ({"manager": "delta"}, {"manager": "backup"}),
    ({"membership": "multicast"}, {"membership": "static"}),
    ({"membership": "static"}, {"membership": "multicast"}),
    ({"membership": "static"}, {"membership": "static", "peers": PEERS[:1]}),
    ({}, {"receiver_port": 4010, "multicast_address": "228.0.0.9", "state_transfer_timeout": 30}),
]


@pytest.mark.parametrize("before,after", CHANGES)
@pytest.mark.parametrize("name", INPUT_IDS)
def test_changed_setting_equals_patching_stock(name, before, after):
    data, major = input_named(name)
    first = patch_server_xml(data, spec_for(major, **before), "src")
    direct = patch_server_xml(data, spec_for(major, **after), "src")
    assert patch_server_xml(first, spec_for(major, **after), "src") == direct


@pytest.mark.parametrize("name", INPUT_IDS)
def test_changed_node_identity_equals_patching_stock(name):
    data, major = input_named(name)
    first = patch_server_xml(data, spec_for(major), "src")
    other = ClusterSpec(major, "10.0.0.12", "tomcat2", peers=(("10.0.0.11", "tomcat1"),))
    assert patch_server_xml(first, other, "src") == patch_server_xml(data, other, "src")


def test_channel_send_options_reaches_backup_manager():
    out = patch_server_xml(stock("9.0.121"), spec_for(9, "backup", channel_send_options=2), "src")
    root = etree.fromstring(out)
    cluster = root.find("Service/Engine/Cluster")
    assert cluster.get("channelSendOptions") == "2"
    assert cluster.find("Manager").get("mapSendOptions") == "2"


# --------------------------------------------------------------------------- Tomcat specifics


@pytest.mark.parametrize("version", list(VERSIONS))
def test_static_members_agree_across_nodes(version):
    major = VERSIONS[version][0]
    nodes = [(NODE_ADDRESS, NODE_ROUTE), *PEERS]
    local_ids, member_ids = {}, {}
    for address, route in nodes:
        peers = tuple(n for n in nodes if n[0] != address)
        spec = ClusterSpec(major, address, route, membership="static", peers=peers)
        root = etree.fromstring(patch_server_xml(stock(version), spec, "src"))
        cluster = root.find("Service/Engine/Cluster")
        holder = (cluster.find("Channel/Membership") if major >= 9 else
                  cluster.find("Channel/Interceptor[LocalMember]"))
        assert holder is not None
        if major >= 9:
            assert holder.get("className").endswith(".StaticMembershipService")
            assert cluster.get("channelStartOptions") is None
            assert cluster.find("Channel/Interceptor[@className="
                                "'org.apache.catalina.tribes.group.interceptors.TcpPingInterceptor']") is None
        else:
            assert holder.get("className").endswith(".StaticMembershipInterceptor")
            assert cluster.get("channelStartOptions") == "3"
            assert cluster.find("Channel/Membership") is None
            names = [i.get("className").rsplit(".", 1)[1] for i in cluster.findall("Channel/Interceptor")]
            assert names.index("TcpPingInterceptor") < names.index("TcpFailureDetector") < names.index(
                "StaticMembershipInterceptor")
        local = holder.find("LocalMember")
        assert local.get("host") is None and local.get("port") is None
        local_ids[address] = local.get("uniqueId")
        for member in holder.findall("Member"):
            assert member.get("port") == "4000"
            member_ids.setdefault(member.get("host"), set()).add(member.get("uniqueId"))
        assert cluster.find("Channel/Receiver").get("autoBind") == "0"
    # what each node calls itself is what the others call it
    assert {a: {i} for a, i in local_ids.items()} == member_ids
    assert len(set(local_ids.values())) == len(nodes)
    for value in local_ids.values():
        numbers = [int(x) for x in value.strip("{}").split(",")]
        assert len(numbers) == 16 and all(0 <= x <= 127 for x in numbers) and " " not in value


def test_unique_id_is_deterministic():
    assert unique_id("10.0.0.1", "a") == unique_id("10.0.0.1", "a") != unique_id("10.0.0.1", "b")


@pytest.mark.parametrize("version", list(VERSIONS))
def test_multicast_binds_the_node_address(version):
    major = VERSIONS[version][0]
    root = etree.fromstring(patch_server_xml(stock(version), spec_for(major), "src"))
    membership = root.find("Service/Engine/Cluster/Channel/Membership")
    assert membership.get("className").endswith(".McastService")
    assert (membership.get("address"), membership.get("port"), membership.get("bind")) == (
        "228.0.0.4", "45564", NODE_ADDRESS)
    assert root.find("Service/Engine/Cluster/Channel/Receiver").get("autoBind") == "100"


def test_tomcat7_keeps_the_session_id_binder_listener_and_85_does_not():
    seven = patch_server_xml(stock("7.0.76"), spec_for(7), "src")
    eight = patch_server_xml(stock("8.5.100"), spec_for(8), "src")
    assert b"JvmRouteSessionIDBinderListener" in seven and b"MessageDispatchInterceptor\"" not in seven
    assert b"JvmRouteSessionIDBinderListener" not in eight and b"MessageDispatchInterceptor\"" in eight
    assert b"FarmWarDeployer" not in seven + eight


@pytest.mark.parametrize("manager,membership", COMBOS)
def test_read_cluster(manager, membership):
    assert read_cluster(stock("10.1.59"), "src") is None
    out = patch_server_xml(stock("10.1.59"), spec_for(10, manager, membership), "src")
    summary = read_cluster(out, "src")
    assert summary == {
        "managed": True,
        "jvm_route": NODE_ROUTE,
        "manager": f"org.apache.catalina.ha.session.{'DeltaManager' if manager == 'delta' else 'BackupManager'}",
        "membership": membership,
        "bridge": False,
        "members": [f"{a}:4000" for a, _ in PEERS] if membership == "static" else [],
        "multicast": "228.0.0.4:45564" if membership == "multicast" else None,
        "receiver_address": NODE_ADDRESS,
        "receiver_port": "4000",
        "channel_send_options": "6",
        "encryption_key": None,
    }


@pytest.mark.parametrize("version", ["9.0.121", "10.1.59", "11.0.25"])
@pytest.mark.parametrize("membership", ["multicast", "static"])
def test_a_bridge_keeps_its_service_and_lists_every_peer_in_the_interceptor(version, membership):
    """A membership switch's bridge (issue 24), on Apache's stock server.xml: the kind's own service
    (McastService, or StaticMembershipService with its LocalMember), then TcpPingInterceptor,
    TcpFailureDetector, a StaticMembershipInterceptor listing every peer and no LocalMember (the
    channel's local member stays the service's: McastService gets no host and port otherwise), each
    sending with its own option flags (raw bytes to a node without them, no conflict between them),
    the receiver on its fixed port; read back as a bridge of that kind; patched twice, the same."""
    major = VERSIONS[version][0]
    spec = spec_for(major, membership=membership, bridge=True)
    out = patch_server_xml(stock(version), spec, "src")
    assert patch_server_xml(out, spec, "src") == out
    root = etree.fromstring(out)
    channel = root.find("Service/Engine/Cluster/Channel")
    assert root.find("Service/Engine/Cluster").get("channelStartOptions") is None
    assert channel.get("heartbeatSleeptime") == "500"  # a peer on the other bridge re-adds a restarted node soon
    service = channel.find("Membership")
    assert service.get("className").endswith(".McastService" if membership == "multicast" else ".StaticMembershipService")
    assert [i.get("className").rsplit(".", 1)[1] for i in channel.findall("Interceptor")] == [
        "TcpPingInterceptor", "TcpFailureDetector", "StaticMembershipInterceptor", "MessageDispatchInterceptor"]
    ping, _, smi, _ = channel.findall("Interceptor")
    assert (ping.get("staticOnly"), ping.get("optionFlag"), smi.get("optionFlag")) == ("true", "4097", "8193")
    flags = [int(ping.get("optionFlag")), int(smi.get("optionFlag")), 8]  # MessageDispatchInterceptor's 8
    assert all(a & 1 for a in flags[:2])  # Channel.SEND_OPTIONS_BYTE_MESSAGE
    for i, a in enumerate(flags):  # GroupChannel.checkOptionFlags: no flag contains another
        assert not any((a & b) in (a, b) for b in flags[i + 1:]), (a, flags)
    assert [c.tag for c in smi] == ["Member", "Member"]
    assert [(m.get("host"), m.get("port")) for m in smi] == [(a, "4000") for a, _ in PEERS]
    assert [m.get("uniqueId") for m in smi] == [unique_id(a, r) for a, r in PEERS]
    if membership == "static":
        assert [c.tag for c in service] == ["LocalMember", "Member", "Member"]
    assert channel.find("Receiver").get("autoBind") == "0"
    summary = read_cluster(out, "src")
    assert (summary["membership"], summary["bridge"], summary["members"]) == (
        membership, True, [f"{a}:4000" for a, _ in PEERS])
    assert summary["multicast"] == ("228.0.0.4:45564" if membership == "multicast" else None)


def test_a_bridge_needs_peers_and_tomcat7_has_no_static_one():
    with pytest.raises(TcsessionError, match="bridge needs the other nodes"):
        patch_server_xml(stock("10.1.59"), spec_for(10, bridge=True, peers=()), "src")
    with pytest.raises(TcsessionError, match="no static bridge"):
        patch_server_xml(stock("8.5.100"), spec_for(8, membership="static", bridge=True), "src")
    legacy = read_cluster(patch_server_xml(stock("8.5.100"), spec_for(8, bridge=True), "src"), "src")
    assert (legacy["membership"], legacy["bridge"]) == ("multicast", True)
    assert read_cluster(patch_server_xml(stock("8.5.100"), spec_for(8, membership="static"), "src"),
                        "src")["bridge"] is False  # channelStartOptions="3" and the interceptors: static itself


def test_read_cluster_legacy_static_and_operator_cluster():
    out = patch_server_xml(stock("7.0.76"), spec_for(7, membership="static"), "src")
    assert read_cluster(out, "src")["members"] == ["10.0.0.12:4000", "10.0.0.13:4000"]
    data = stock("9.0.121").replace(
        b"      <!--\n      <Cluster className=\"org.apache.catalina.ha.tcp.SimpleTcpCluster\"/>\n      -->",
        b"      <Cluster className=\"org.apache.catalina.ha.tcp.SimpleTcpCluster\"/>")
    assert read_cluster(data, "src")["managed"] is False
    assert read_cluster(data, "src")["membership"] == "multicast"


# --------------------------------------------------------------------------- other layouts


OPERATOR_CLUSTER = (b'      <Cluster className="org.apache.catalina.ha.tcp.SimpleTcpCluster"\n'
                    b'               channelSendOptions="8"/>\n')


@pytest.mark.parametrize("version", list(VERSIONS))
def test_operator_cluster_is_replaced_in_place(version):
    major = VERSIONS[version][0]
    data = stock(version)
    anchor = b"    <Engine name=\"Catalina\" defaultHost=\"localhost\">\n"
    hosted = data.replace(b"      <Host name=\"localhost\"", OPERATOR_CLUSTER + b"\n      <Host name=\"localhost\"")
    assert hosted != data and anchor in data
    out = patch_server_xml(hosted, spec_for(major), "src")
    root = etree.fromstring(out)
    engine = root.find("Service/Engine")
    clusters = engine.findall("Cluster")
    assert len(clusters) == 1 and clusters[0].get("channelSendOptions") == "6"
    assert clusters[0].getnext().tag == "Host"  # where the operator had it
    assert is_marker_text(clusters[0].getprevious().text)
    assert patch_server_xml(out, spec_for(major), "src") == out
    # undo removes ours; the operator's own Cluster comes back from the saved copy, not from here
    undone = patch_server_xml(out, None, "src")
    assert undone == hosted.replace(OPERATOR_CLUSTER + b"\n", b"\n")


@pytest.mark.parametrize("version", list(VERSIONS))
def test_operator_jvm_route_comes_back_on_undo(version):
    major = VERSIONS[version][0]
    data = stock(version).replace(b'<Engine name="Catalina" defaultHost="localhost">',
                                  b'<Engine name="Catalina" jvmRoute="node--a" defaultHost="localhost">')
    out = patch_server_xml(data, spec_for(major), "src")
    assert b'<Engine name="Catalina" jvmRoute="tomcat1" defaultHost="localhost">' in out
    assert patch_server_xml(out, spec_for(major), "src") == out
    assert patch_server_xml(out, None, "src") == data


@pytest.mark.parametrize("version", list(VERSIONS))
def test_crlf_file_stays_crlf(version):
    major = VERSIONS[version][0]
    data = stock(version).replace(b"\n", b"\r\n")
    for manager, membership in COMBOS:
        out = patch_server_xml(data, spec_for(major, manager, membership), "src")
        assert re.search(rb"(?<!\r)\n", out) is None
        golden = (GOLDEN / f"{version}-{manager}-{membership}.xml").read_bytes()
        assert out == golden.replace(b"\n", b"\r\n")
        assert patch_server_xml(out, None, "src") == data


def test_engine_without_the_commented_example():
    data = stock("10.1.59").replace(
        b"      <!--\n      <Cluster className=\"org.apache.catalina.ha.tcp.SimpleTcpCluster\"/>\n      -->\n", b"")
    out = patch_server_xml(data, spec_for(10), "src")
    text = out.decode()
    # before the comments that introduce the Realm, after the clustering note's blank line
    assert re.search(r"\(reference documentation\) -->\n\n      <!-- tcsession: managed cluster .*?</Cluster>\n"
                     r"      <!-- Use the LockOutRealm", text, re.S)
    assert patch_server_xml(out, spec_for(10), "src") == out
    assert patch_server_xml(out, None, "src") == data


@pytest.mark.parametrize("engine", [
    b'<Engine name="Catalina" defaultHost="localhost">\n    </Engine>',
    b'<Engine name="Catalina" defaultHost="localhost"/>',
])
def test_engine_without_children(engine):
    data = b'<?xml version="1.0"?>\n<Server>\n  <Service name="Catalina">\n    ' + engine + b"\n  </Service>\n</Server>\n"
    out = patch_server_xml(data, spec_for(10), "src")
    assert b'\n      <!-- tcsession: managed cluster' in out and b"\n      </Cluster>\n    </Engine>" in out
    assert patch_server_xml(out, spec_for(10), "src") == out
    undone = patch_server_xml(out, None, "src")
    assert undone == data.replace(b'localhost"/>', b'localhost">\n    </Engine>')


def test_orphan_marker_is_cleaned_up():
    out = patch_server_xml(stock("11.0.25"), spec_for(11), "src")
    orphan = re.sub(rb"\n      <Cluster [^\n]*channelSendOptions.*?</Cluster>", b"", out, flags=re.S)
    assert orphan.count(b"<Cluster ") == stock("11.0.25").count(b"<Cluster ") and MARKER.encode() in orphan
    assert patch_server_xml(orphan, spec_for(11), "src") == out
    assert patch_server_xml(orphan, None, "src") == stock("11.0.25")


# --------------------------------------------------------------------------- errors


def assert_one_line_error(err, source: str, *parts: str):
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(source + ": ")
    for part in parts:
        assert part in msg, msg


@pytest.mark.parametrize("version", list(VERSIONS))
def test_truncated_file(version):
    data = stock(version)
    source = source_for(version)
    with pytest.raises(TcsessionError) as err:
        patch_server_xml(data[: len(data) // 2], spec_for(VERSIONS[version][0]), source)
    assert_one_line_error(err, source, "not well-formed XML at line", "tcsession changed nothing")


@pytest.mark.parametrize("version", list(VERSIONS))
def test_unclosed_cluster_listener_as_in_the_70_howto(version):
    data = stock(version).replace(
        b'    <Engine name="Catalina" defaultHost="localhost">\n',
        b'    <Engine name="Catalina" defaultHost="localhost">\n'
        b'      <ClusterListener className="org.apache.catalina.ha.session.ClusterSessionListener">\n')
    source = source_for(version)
    for spec in (spec_for(VERSIONS[version][0]), None):
        with pytest.raises(TcsessionError) as err:
            patch_server_xml(data, spec, source)
        assert_one_line_error(err, source, "not well-formed XML at line", "ClusterListener")
    with pytest.raises(TcsessionError):
        read_cluster(data, source)


@pytest.mark.parametrize("version", list(VERSIONS))
def test_no_engine(version):
    data = stock(version)
    start = data.index(b'    <Engine name="Catalina" defaultHost="localhost">')
    end = data.index(b"</Engine>\n") + len(b"</Engine>\n")
    data = data[:start] + data[end:]
    source = source_for(version)
    with pytest.raises(TcsessionError) as err:
        patch_server_xml(data, spec_for(VERSIONS[version][0]), source)
    assert_one_line_error(err, source, "no <Engine> inside <Service>")


@pytest.mark.parametrize("data,expected", [
    (b"<Context/>", "root element is <Context>, expected <Server>"),
    (b"<Server><Service><Engine/></Service><Service><Engine/></Service></Server>", "2 <Service> elements"),
    (b"<Server><Service><Engine><Cluster/><Cluster/></Engine></Service></Server>", "2 <Cluster> elements"),
    (b'<Server><Service><Engine><Host name="h"><Cluster/></Host></Engine></Service></Server>',
     '<Host name="h"> has its own <Cluster>'),
    (b"", "not well-formed XML at line 1"),
])
def test_unusable_files(data, expected):
    with pytest.raises(TcsessionError) as err:
        patch_server_xml(data, spec_for(10), "h:/s.xml")
    assert_one_line_error(err, "h:/s.xml", expected)


@pytest.mark.parametrize("changes,expected", [
    ({"address": "auto"}, "node address 'auto'"),
    ({"address": "127.0.0.1"}, "cannot be advertised"),
    ({"address": "localhost"}, "loopback"),
    ({"jvm_route": "a.b"}, "jvm_route 'a.b'"),
    ({"tomcat_major": 6}, "Tomcat 6 is not supported"),
    ({"manager": "msm"}, "manager 'msm'"),
    ({"membership": "dns"}, "membership 'dns'"),
    ({"membership": "static", "peers": ()}, "static membership needs the other nodes"),
    ({"peers": (("10.0.0.11", "tomcat9"),)}, "appears twice"),
    ({"peers": (("10.0.0.19", "tomcat1"),)}, "jvm_route 'tomcat1' appears twice"),
    ({"receiver_port": 0}, "receiver_port 0"),
    ({"channel_send_options": "async"}, "channel_send_options 'async' must be a whole number"),
    ({"state_transfer_timeout": 0}, "state_transfer_timeout 0"),
    ({"multicast_address": "10.0.0.1"}, "not a multicast address"),
])
def test_unusable_specs(changes, expected):
    fields = {"tomcat_major": 10, "address": NODE_ADDRESS, "jvm_route": NODE_ROUTE, "peers": PEERS}
    fields.update(changes)
    with pytest.raises(TcsessionError) as err:
        patch_server_xml(stock("10.1.59"), ClusterSpec(**fields), "h:/s.xml")
    assert_one_line_error(err, "h:/s.xml", expected)


# --------------------------------------------------------------------------- msm: jvmRoute only


@pytest.mark.parametrize("version", list(VERSIONS))
def test_engine_route_alone_round_trips(version):
    data = stock(version)
    routed = patch_engine_route(data, "tomcat1", "x")
    assert patch_engine_route(routed, "tomcat1", "x") == routed  # twice equals once
    assert patch_engine_route(routed, None, "x") == data  # stock back, byte for byte
    assert patch_engine_route(patch_engine_route(routed, "tomcat2", "x"), None, "x") == data
    added = [l for l in difflib.unified_diff(data.decode().splitlines(), routed.decode().splitlines(), lineterm="")
             if l[:1] in "+-" and l[:3] not in ("+++", "---")]
    assert len(added) == 3 and sum(l.startswith("+") for l in added) == 2  # the Engine line, and one marker


@pytest.mark.parametrize("version", list(VERSIONS))
def test_switching_between_delta_and_msm_keeps_the_operators_route(version):
    data = stock(version).replace(b'<Engine name="Catalina" defaultHost="localhost">',
                                  b'<Engine name="Catalina" defaultHost="localhost" jvmRoute="ops-1">')
    spec = spec_for(VERSIONS[version][0])
    delta = patch_server_xml(patch_engine_route(data, None, "x"), spec, "x")
    msm = patch_engine_route(patch_server_xml(delta, None, "x"), "tomcat7", "x")
    assert b'jvmRoute="tomcat7"' in msm and b"tcsession: managed cluster" not in msm
    back = patch_server_xml(patch_engine_route(msm, None, "x"), spec, "x")
    assert back == delta
    assert patch_engine_route(patch_server_xml(back, None, "x"), None, "x") == data  # "ops-1" again


def test_engine_route_errors():
    with pytest.raises(TcsessionError, match=r"^h:/etc/tomcat10/server.xml: .*\(tcsession changed nothing\)|^h:/etc"):
        patch_engine_route(b"<Server><Service>", "t1", "h:/etc/tomcat10/server.xml")
    with pytest.raises(TcsessionError, match="not a usable jvmRoute"):
        patch_engine_route(stock("10.1.59"), "bad route", "x")
