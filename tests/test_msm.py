"""memcached-session-manager planning, context.xml patching and memcached configuration (tcsession.msm).

Inputs: Apache's stock context.xml of each supported Tomcat line, verbatim (checked by sha256),
from the shared fixtures directory (override with TCSESSION_TOMCAT_FIXTURES); Debian's packaged
conf/context.xml from tests/data; Debian's ROOT application META-INF/context.xml (below, 49
bytes); Debian 12's /etc/memcached.conf (tests/data/debian-bookworm-memcached) and a
hand-written RHEL 9 /etc/sysconfig/memcached (tests/data/rhel9-memcached).

Golden files: tests/golden/msm/. The tests compare against the committed files. To regenerate
them after an intended change, run

    TCSESSION_REGEN_GOLDEN=1 .venv/bin/pytest tests/test_msm.py -q

and review the diff of tests/golden/msm/ before committing.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from dataclasses import replace
from pathlib import Path

import pytest
from lxml import etree

from tcsession.errors import TcsessionError
from tcsession.inventory import parse_inventory
from tcsession.msm import (
    MANAGER_CLASS,
    MARKER,
    Artifact,
    ManagerSpec,
    convert_command,
    jakarta_jar_name,
    jar_set,
    manager_spec,
    needs_jakarta,
    patch_context,
    render_app_context,
    render_memcached_conf_debian,
    render_memcached_sysconfig,
)
from tcsession.xmlpatch import comment_texts

TESTS = Path(__file__).resolve().parent
FIXTURES = Path(os.environ.get("TCSESSION_TOMCAT_FIXTURES", TESTS.parent.parent / "shared" / "fixtures" / "tomcat"))
GOLDEN = TESTS / "golden" / "msm"
DATA = TESTS / "data"
DEBIAN_CONTEXT = DATA / "debian-bookworm-tomcat10" / "context.xml"
DEBIAN_MEMCACHED = DATA / "debian-bookworm-memcached" / "memcached.conf"
RHEL_SYSCONFIG = DATA / "rhel9-memcached" / "memcached"
REGEN = os.environ.get("TCSESSION_REGEN_GOLDEN") == "1"

# version directory -> sha256 of the stock context.xml (the fixtures' README)
VERSIONS = {
    "7.0.76": "2e602c69073700153de1b60f10c17b424ef151336315df1be1ee4581c2480f26",
    "8.5.100": "9bc2dca6526acec4cd370958c878b18e2cebf25aba50655f3e8923a4272ac1c0",
    "9.0.121": "7dbc055fcdbf4a58792fccfb3e4d2ae55d2139148a0a0f388718c82c86a405d2",
    "10.1.59": "13ac8ee5407d2879c2beedb2d0a271ea05a195c3fe0a6cb7d0f753e8b6899786",
    "11.0.25": "13ac8ee5407d2879c2beedb2d0a271ea05a195c3fe0a6cb7d0f753e8b6899786",
}
INPUTS = [*VERSIONS, "debian-bookworm-tomcat10"]

# Debian 12's tomcat10 10.1.60-1~deb12u1: /usr/share/tomcat10-root/default_root/META-INF/context.xml
# (installed as /var/lib/tomcat10/webapps/ROOT/META-INF/context.xml), verbatim, 49 bytes.
DEBIAN_ROOT_APP_CONTEXT = b'<Context path=""\n\tantiResourceLocking="false" />\n'


def stock(name: str) -> bytes:
    if name == "debian-bookworm-tomcat10":
        return DEBIAN_CONTEXT.read_bytes()
    path = FIXTURES / name / "context.xml"
    if not path.exists():
        pytest.fail(f"missing fixture {path}; set TCSESSION_TOMCAT_FIXTURES")
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == VERSIONS[name], f"{path} is not the stock file"
    return data


def inventory(tomcats: int = 2, msm: str = "", memcached: dict[int, bool] | None = None):
    lines = ["[ssh]", "agent = true", "", "[nginx.lb]", 'address = "10.0.0.10"']
    for i in range(1, tomcats + 1):
        lines += ["", f"[tomcat.tomcat{i}]", f'address = "10.0.0.{10 + i}"']
        if memcached and i in memcached:
            lines.append(f"memcached = {'true' if memcached[i] else 'false'}")
    lines += ["", "[msm]", msm]
    return parse_inventory("\n".join(lines) + "\n", Path("/nonexistent/hosts.toml"))


def spec_for(node: int = 0, tomcats: int = 2, msm: str = "") -> ManagerSpec:
    inv = inventory(tomcats, msm)
    return manager_spec(node, inv.tomcats, inv.msm)


STICKY = spec_for(0, 2, "sticky = true")
NON_STICKY = spec_for(0, 2, "sticky = false")
MODES = {"sticky": STICKY, "nonsticky": NON_STICKY}


def golden(name: str, data: bytes) -> None:
    path = GOLDEN / name
    if REGEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    assert path.exists(), f"missing golden file {path}; run with TCSESSION_REGEN_GOLDEN=1 and review it"
    assert data == path.read_bytes(), f"output differs from {path}"


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and msg.strip() == msg and msg
    return msg


def diff(a: bytes, b: bytes) -> tuple[list[str], list[str]]:
    """(removed lines, added lines) from a to b."""
    removed, added = [], []
    for line in difflib.ndiff(a.decode("latin-1").splitlines(), b.decode("latin-1").splitlines()):
        if line.startswith("- "):
            removed.append(line[2:])
        elif line.startswith("+ "):
            added.append(line[2:])
    return removed, added


def managers(data: bytes) -> list:
    root = etree.fromstring(data)
    return [el for el in root if el.tag == "Manager"]


# --------------------------------------------------------------------------- jar sets


def coords(js) -> list[str]:
    return [a.coordinate for a in js.artifacts]


@pytest.mark.parametrize("major, module", [(7, "tc7"), (8, "tc8"), (9, "tc9"), (10, "tc9"), (11, "tc9")])
@pytest.mark.parametrize("serializer", ["java", "kryo", "javolution"])
def test_jar_set_core_module_and_spymemcached(major, module, serializer):
    js = jar_set(major, serializer)
    got = coords(js)
    assert got[:3] == [
        "de.javakaffee.msm:memcached-session-manager:2.3.2",
        f"de.javakaffee.msm:memcached-session-manager-{module}:2.3.2",
        "net.spy:spymemcached:2.12.3",
    ]
    assert len(set(got)) == len(got)
    other_modules = {f"memcached-session-manager-tc{n}" for n in (6, 7, 8, 9)} - {f"memcached-session-manager-{module}"}
    assert not other_modules & {a.artifact for a in js.artifacts}
    if major >= 10:
        assert needs_jakarta(major)
        assert {a.artifact for a in js.jakarta_convert} >= {"memcached-session-manager", "memcached-session-manager-tc9"}
        assert all(a.group == "de.javakaffee.msm" for a in js.jakarta_convert)
        assert set(js.jakarta_convert) <= set(js.artifacts)
    else:
        assert not needs_jakarta(major)
        assert js.jakarta_convert == ()


@pytest.mark.parametrize("major", [7, 8, 9, 10, 11])
def test_jar_set_java_needs_nothing_more(major):
    js = jar_set(major, "java")
    assert len(js.artifacts) == 3 and js.warnings == ()


@pytest.mark.parametrize("major", [7, 8, 9, 10, 11])
def test_jar_set_kryo_is_complete(major):
    js = jar_set(major, "kryo")
    assert coords(js)[3:] == [
        "de.javakaffee.msm:msm-kryo-serializer:2.3.2",
        "de.javakaffee:kryo-serializers:0.41",
        "com.esotericsoftware:kryo:4.0.0",
        "com.esotericsoftware:reflectasm:1.11.3",
        "com.esotericsoftware:minlog:1.3.0",
        "org.objenesis:objenesis:2.2",  # without it: NoClassDefFoundError
        "org.ow2.asm:asm:5.0.4",
    ]
    assert js.warnings == ()


def test_jar_set_kryo_other_msm_version_warns():
    js = jar_set(9, "kryo", "2.3.0")
    assert "de.javakaffee.msm:msm-kryo-serializer:2.3.0" in coords(js)
    assert len(js.warnings) == 1 and "2.3.2" in js.warnings[0]


@pytest.mark.parametrize("major", [7, 9, 10])
def test_jar_set_javolution_last_release_with_warnings(major):
    js = jar_set(major, "javolution")
    assert coords(js)[3:] == [
        "de.javakaffee.msm:msm-javolution-serializer:2.1.1",
        "javolution:javolution:5.4.3.1",
    ]
    assert len(js.warnings) == 2
    text = " ".join(js.warnings)
    assert "Maven Central" in text and "maven_repo" in text and "kryo" in text
    assert all("\n" not in w for w in js.warnings)


@pytest.mark.parametrize("major", [6, 5, 12, 0, -1])
def test_jar_set_refuses_unsupported_tomcat(major):
    with pytest.raises(TcsessionError) as err:
        jar_set(major, "java")
    msg = one_line(err)
    assert f"Tomcat {major}" in msg and "7" in msg


def test_jar_set_refuses_unknown_serializer():
    with pytest.raises(TcsessionError) as err:
        jar_set(9, "xstream")
    assert '"xstream"' in one_line(err) and "[msm] serializer" in str(err.value)


def test_artifact_maven_layout():
    a = jar_set(9, "java").artifacts[1]
    assert a.filename == "memcached-session-manager-tc9-2.3.2.jar"
    assert a.path == "de/javakaffee/msm/memcached-session-manager-tc9/2.3.2/memcached-session-manager-tc9-2.3.2.jar"
    assert Artifact("org.ow2.asm", "asm", "5.0.4").path == "org/ow2/asm/asm/5.0.4/asm-5.0.4.jar"
    for bad in ("../x", "a/b", "", ".hidden"):
        with pytest.raises(ValueError):
            Artifact("g", bad, "1")


def test_jakarta_names_and_command():
    assert jakarta_jar_name("memcached-session-manager-tc9-2.3.2.jar") == "memcached-session-manager-tc9-2.3.2-jakarta.jar"
    assert jakarta_jar_name("x-1-jakarta.jar") == "x-1-jakarta.jar"
    with pytest.raises(ValueError):
        jakarta_jar_name("x.zip")
    assert convert_command("/tmp/a.jar", Path("/tmp/b.jar")) == ["javax2jakarta", "-profile=TOMCAT", "/tmp/a.jar", "/tmp/b.jar"]


# --------------------------------------------------------------------------- manager spec


@pytest.mark.parametrize("tomcats", [2, 3])
def test_sticky_failover_is_each_nodes_own_memcached(tomcats):
    inv = inventory(tomcats, "sticky = true")
    specs = [manager_spec(i, inv.tomcats, inv.msm) for i in range(tomcats)]
    nodes = ",".join(f"n{i}:10.0.0.{10 + i}:11211" for i in range(1, tomcats + 1))
    for i, spec in enumerate(specs):
        assert spec.memcached_nodes_value == nodes  # the same on every node
        assert spec.failover_nodes == (f"n{i + 1}",)  # but failover differs: its own memcached
        own = dict((n, h) for n, h, _ in spec.memcached_nodes)[spec.failover_nodes[0]]
        assert own == inv.tomcats[i].address
        assert spec.sticky and spec.locking_mode is None
        attrs = dict(spec.attributes())
        assert attrs["sticky"] == "true" and "lockingMode" not in attrs
        assert attrs["failoverNodes"] == f"n{i + 1}"
    assert len({s.failover_nodes for s in specs}) == tomcats


@pytest.mark.parametrize("tomcats", [2, 3])
def test_non_sticky_has_no_failover_and_locks(tomcats):
    inv = inventory(tomcats, "sticky = false")
    for i in range(tomcats):
        spec = manager_spec(i, inv.tomcats, inv.msm)
        assert spec.failover_nodes == () and not spec.sticky
        assert spec.locking_mode == "all"  # the default: every request takes MSM's lock
        attrs = dict(spec.attributes())
        assert "failoverNodes" not in attrs
        assert attrs["sticky"] == "false" and attrs["lockingMode"] == "all"


def test_non_sticky_locking_none_allowed_and_sticky_ignores_locking():
    assert spec_for(1, 2, 'sticky = false\nlocking_mode = "none"').locking_mode == "none"
    assert spec_for(1, 2, 'sticky = true\nlocking_mode = "all"').locking_mode is None


def test_attributes_order_and_transcoder():
    spec = spec_for(0, 2, 'sticky = false\nserializer = "kryo"')
    assert [n for n, _ in spec.attributes()] == [
        "className", "memcachedNodes", "sticky", "lockingMode", "requestUriIgnorePattern", "transcoderFactoryClass",
        "sessionBackupAsync", "sessionBackupTimeout"]
    assert dict(spec.attributes())["transcoderFactoryClass"] == "de.javakaffee.web.msm.serializer.kryo.KryoTranscoderFactory"
    assert spec_for(0, 2, 'serializer = "javolution"').transcoder_factory_class.endswith(".JavolutionTranscoderFactory")
    assert spec_for(0, 2).transcoder_factory_class is None
    assert dict(spec_for(0, 2, 'request_uri_ignore_pattern = ""').attributes()).get("requestUriIgnorePattern") is None


@pytest.mark.parametrize("sticky", ["true", "false"])
def test_backup_sync_is_the_default_and_async_is_msms_own(sticky):
    """backup = "sync": sessionBackupAsync="false" (MSM stores the session inside the request,
    BackupSessionTask waiting up to sessionBackupTimeout, given MSM's operationTimeout of 1000 ms);
    "async": neither attribute, MSM's defaults (true, 100 ms)."""
    attrs = dict(spec_for(0, 2, f"sticky = {sticky}").attributes())
    assert attrs["sessionBackupAsync"] == "false" and attrs["sessionBackupTimeout"] == "1000"
    attrs = dict(spec_for(0, 2, f'sticky = {sticky}\nbackup = "async"').attributes())
    assert "sessionBackupAsync" not in attrs and "sessionBackupTimeout" not in attrs


def test_backup_invalid_is_one_line_naming_file_and_key(tmp_path):
    with pytest.raises(TcsessionError) as err:
        inventory(2, 'backup = "later"')
    msg = one_line(err)
    assert "[msm] backup" in msg and '"later"' in msg and 'use "sync"' in msg and "hosts.toml" in msg


def test_session_valve_in_the_default_host_only_for_non_sticky():
    """msm non-sticky: Tomcat's PersistentValve (its per-session semaphore) as the default Host's
    last child, with a marker; idempotent, removable byte for byte, on every stock server.xml."""
    from tcsession import serverxml

    for path in sorted(FIXTURES.glob("*/server.xml")):
        data = path.read_bytes()
        on = serverxml.patch_session_valve(data, True, str(path))
        assert on.count(serverxml.SESSION_VALVE.encode()) == 1 and serverxml.VALVE_MARKER.encode() in on
        assert serverxml.patch_session_valve(on, True, str(path)) == on
        assert serverxml.patch_session_valve(on, False, str(path)) == data
        assert serverxml.patch_session_valve(data, False, str(path)) == data
        added = [l for l in difflib.unified_diff(data.decode().splitlines(), on.decode().splitlines(), lineterm="")
                 if l.startswith("+") and not l.startswith("+++")]
        assert len(added) == 2, added  # the marker and the valve, nothing else moves
        text = on.decode()
        after = text[text.index(serverxml.SESSION_VALVE):]
        assert after.index("</Host>") < after.index("<", 1) + 1 or after.index("</Host>") == after.index("<", 1)
    own = b'<Server><Service><Engine defaultHost="a"><Host name="a"><Valve className="%s"/></Host></Engine></Service></Server>' % serverxml.SESSION_VALVE.encode()
    assert serverxml.patch_session_valve(own, False, "own") == own  # an operator's own valve stays


def test_memcached_port_and_hosts_without_memcached():
    inv = inventory(3, "sticky = true\nmemcached_port = 11311", memcached={2: False})
    specs = [manager_spec(i, inv.tomcats, inv.msm) for i in range(3)]
    assert specs[0].memcached_nodes_value == "n1:10.0.0.11:11311,n3:10.0.0.13:11311"  # ids keep their position
    assert [s.failover_nodes for s in specs] == [("n1",), (), ("n3",)]


def test_single_memcached_node_has_no_failover():
    inv = inventory(2, "sticky = true", memcached={2: False})
    assert [manager_spec(i, inv.tomcats, inv.msm).failover_nodes for i in range(2)] == [(), ()]


def test_manager_spec_errors():
    inv = inventory(2, "sticky = true", memcached={1: False, 2: False})
    with pytest.raises(TcsessionError) as err:
        manager_spec(0, inv.tomcats, inv.msm)
    assert "memcached = true" in one_line(err)
    msm = inventory(2).msm
    with pytest.raises(TcsessionError) as err:
        manager_spec(0, [("127.0.0.1", True), ("10.0.0.12", True)], msm)
    assert "loopback" in one_line(err)
    with pytest.raises(TcsessionError) as err:
        manager_spec(0, [("fd00::1", True), ("10.0.0.12", True)], msm)
    assert "IPv6" in one_line(err)
    with pytest.raises(TcsessionError):
        manager_spec(2, inv.tomcats, inv.msm)


# --------------------------------------------------------------------------- context.xml


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("name", INPUTS)
def test_patch_context_golden(name, mode):
    out = patch_context(stock(name), MODES[mode], name)
    golden(f"{name}-{mode}-context.xml", out)


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("name", INPUTS)
def test_patch_context_properties(name, mode):
    data = stock(name)
    spec = MODES[mode]
    out = patch_context(data, spec, name)
    assert patch_context(out, spec, name) == out  # idempotent
    assert patch_context(out, None, name) == data  # stock -> spec -> None == stock
    assert patch_context(data, None, name) == data
    # only our lines are added, nothing else moves
    removed, added = diff(data, out)
    assert removed == []
    assert len(added) == 1 + len(spec.attributes())
    assert MARKER in added[0] and added[1].lstrip().startswith("<Manager ")
    # comments kept, plus our marker
    before, after = comment_texts(etree.fromstring(data)), comment_texts(etree.fromstring(out))
    assert [c for c in after if MARKER not in c] == before
    # exactly one Manager, with the spec's attributes, preceded by the marker
    (manager,) = managers(out)
    assert list(manager.attrib.items()) == spec.attributes()
    prev = manager.getprevious()
    assert prev.tag is etree.Comment and MARKER in prev.text and "--" not in prev.text
    # declaration and licence header untouched
    assert out.startswith(data[: data.index(b"<Context")])


@pytest.mark.parametrize("name", INPUTS)
def test_nodes_differ_only_in_failover(name):
    outs = [patch_context(stock(name), spec_for(i, 3, "sticky = true"), name) for i in range(3)]
    for i in (1, 2):
        removed, added = diff(outs[0], outs[i])
        assert [line.strip() for line in removed] == ['failoverNodes="n1"']
        assert [line.strip() for line in added] == [f'failoverNodes="n{i + 1}"']


@pytest.mark.parametrize("name", INPUTS)
def test_switching_mode_replaces_in_place(name):
    sticky = patch_context(stock(name), STICKY, name)
    non_sticky = patch_context(sticky, NON_STICKY, name)
    assert non_sticky == patch_context(stock(name), NON_STICKY, name)
    removed, added = diff(sticky, non_sticky)
    assert {line.strip() for line in removed} == {'failoverNodes="n1"', 'sticky="true"'}
    assert {line.strip() for line in added} == {'sticky="false"', 'lockingMode="all"'}


def test_debian_root_app_context_self_closing():
    data = DEBIAN_ROOT_APP_CONTEXT
    assert len(data) == 49
    out = patch_context(data, STICKY, "ROOT/META-INF/context.xml")
    golden("debian-bookworm-ROOT-app-sticky-context.xml", out)
    assert patch_context(out, STICKY, "x") == out
    assert patch_context(out, None, "x") == data
    assert out.startswith(b'<Context path=""\n\tantiResourceLocking="false">\n')
    (manager,) = managers(out)
    assert manager.get("className") == MANAGER_CLASS


@pytest.mark.parametrize("data", [
    b"<Context/>",
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Context/>\n',
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Context  reloadable="true"  />\n',
    b"<Context>\n</Context>\n",
    b'<Context>\n  <WatchedResource>WEB-INF/web.xml</WatchedResource>\n</Context>',
    b'<?xml version="1.0"?>\r\n<Context>\r\n\t<Valve className="x"/>\r\n</Context>\r\n',
])
@pytest.mark.parametrize("mode", list(MODES))
def test_minimal_contexts_round_trip(data, mode):
    spec = MODES[mode]
    out = patch_context(data, spec, "META-INF/context.xml")
    assert patch_context(out, spec, "x") == out
    assert patch_context(out, None, "x") == data
    (manager,) = managers(out)
    assert list(manager.attrib.items()) == spec.attributes()
    if b"\r\n" in data:
        assert b"\n" not in out.replace(b"\r\n", b"")


def test_render_app_context():
    out = render_app_context(NON_STICKY)
    golden("new-app-nonsticky-context.xml", out)
    assert out.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<Context>\n    <!-- ')
    assert patch_context(out, NON_STICKY, "x") == out


def test_operators_manager_is_replaced():
    data = stock("9.0.121").replace(b'<!--\n    <Manager pathname="" />\n    -->', b'<Manager pathname="" />')
    assert len(managers(data)) == 1
    assert patch_context(data, None, "x") == data  # not ours: None leaves it
    out = patch_context(data, STICKY, "x")
    (manager,) = managers(out)
    assert manager.get("className") == MANAGER_CLASS and manager.get("pathname") is None
    assert patch_context(out, STICKY, "x") == out
    removed, added = diff(data, out)
    assert [line.strip() for line in removed] == ['<Manager pathname="" />']
    assert MARKER in added[0]
    # the managed one is ours now: None removes it (rollback restores the saved original)
    assert managers(patch_context(out, None, "x")) == []


def test_managed_manager_edited_by_hand_is_replaced_and_stray_marker_removed():
    out = patch_context(stock("10.1.59"), STICKY, "x")
    edited = out.replace(b'memcachedNodes="n1:10.0.0.11:11211,n2:10.0.0.12:11211"', b'memcachedNodes="n9:h:1"')
    assert patch_context(edited, STICKY, "x") == out
    # a marker left behind without its Manager
    stray = re.sub(rb"\n    <Manager className=[^>]*/>", b"", out)
    assert len(managers(stray)) == 0 and MARKER.encode() in stray
    assert patch_context(stray, None, "x") == stock("10.1.59")
    assert patch_context(stray, STICKY, "x") == out


def test_escaping_of_attribute_values():
    spec = replace(NON_STICKY, request_uri_ignore_pattern='.*\\.(png|css)$|^/a&b<"c">', locking_mode="uriPattern:/x/.*")
    out = patch_context(stock("8.5.100"), spec, "x")
    (manager,) = managers(out)
    assert manager.get("requestUriIgnorePattern") == '.*\\.(png|css)$|^/a&b<"c">'
    assert manager.get("lockingMode") == "uriPattern:/x/.*"
    assert patch_context(out, spec, "x") == out


@pytest.mark.parametrize("data, words", [
    (b"<Context><Manager", "not well-formed"),
    (b"", "not well-formed"),
    (b"<Server/>", "<Server>"),
    (b"<Context><Manager/><Manager/></Context>", "2 <Manager>"),
])
def test_patch_context_errors(data, words):
    with pytest.raises(TcsessionError) as err:
        patch_context(data, STICKY, "/etc/tomcat10/context.xml")
    msg = one_line(err)
    assert msg.startswith("/etc/tomcat10/context.xml: ") and words in msg


def test_patch_context_rejects_bad_spec():
    bad = [
        replace(NON_STICKY, failover_nodes=("n1",)),
        replace(STICKY, failover_nodes=("n1", "n2")),
        replace(STICKY, failover_nodes=("n7",)),
        replace(STICKY, memcached_nodes=()),
        replace(STICKY, memcached_nodes=(("n1", "a", 1), ("n1", "b", 2))),
        replace(NON_STICKY, locking_mode="sometimes"),
    ]
    for spec in bad:
        with pytest.raises(TcsessionError) as err:
            patch_context(stock("9.0.121"), spec, "ctx")
        assert one_line(err).startswith("ctx: ")


# --------------------------------------------------------------------------- memcached


LISTEN = ("10.0.0.11", "127.0.0.1")


def wrapper_args(conf: bytes) -> list[str]:
    """The options Debian's systemd-memcached-wrapper passes to memcached (its perl, in Python)."""
    params = []
    for line in conf.decode().splitlines():
        line = re.sub(r"(?<!\\)#[^#]*", "", line).strip()
        if not line or re.match(r"^-[dh]", line):
            continue
        if not line.startswith("-") and line.split()[0] == "logfile":
            continue
        params.append(line)
    return " ".join(params).split()


def test_debian_memcached_conf_real_file():
    data = DEBIAN_MEMCACHED.read_bytes()
    assert hashlib.sha256(data).hexdigest() == "ff36a52d41b54bfe693dd30ad3ceec24d9328e331b50a6b5f5e32528c69ad267"
    assert "-l 127.0.0.1" in data.decode()
    out = render_memcached_conf_debian(data, LISTEN, 11211)
    golden("debian-bookworm-memcached.conf", out)
    removed, added = diff(data, out)
    assert removed == ["-l 127.0.0.1"] and added == ["-l 10.0.0.11,127.0.0.1"]
    assert render_memcached_conf_debian(out, LISTEN, 11211) == out
    args = wrapper_args(out)
    assert args[args.index("-l") + 1] == "10.0.0.11,127.0.0.1" and args.count("-l") == 1
    assert args[args.index("-p") + 1] == "11211"
    assert "0.0.0.0" not in out.decode()
    other = render_memcached_conf_debian(data, ("10.0.0.12",), 11311)
    removed, added = diff(data, other)
    assert removed == ["-p 11211", "-l 127.0.0.1"] and added == ["-p 11311", "-l 10.0.0.12"]


def test_debian_memcached_conf_edge_cases():
    dup = b"# c\n-l 0.0.0.0 # all\n-m 64\n-l 10.9.9.9\n-p 1\n-p 2\n"
    out = render_memcached_conf_debian(dup, LISTEN, 11211)
    assert out == b"# c\n-l 10.0.0.11,127.0.0.1 # all\n-m 64\n-p 11211\n"
    assert render_memcached_conf_debian(out, LISTEN, 11211) == out
    assert render_memcached_conf_debian(b"-m 64", LISTEN, 11211) == b"-m 64\n-p 11211\n-l 10.0.0.11,127.0.0.1\n"
    assert render_memcached_conf_debian(b"-l127.0.0.1\r\n", ("10.0.0.11",), 11211) == b"-l 10.0.0.11\r\n-p 11211\r\n"
    assert render_memcached_conf_debian(b"--listen=127.0.0.1\n", ("::1",), 11211) == b"-l ::1\n-p 11211\n"
    with pytest.raises(TcsessionError) as err:
        render_memcached_conf_debian(b"-m 64 -l 0.0.0.0\n", LISTEN, 11211)
    assert "line 1" in one_line(err)


@pytest.mark.parametrize("listen, port", [
    ((), 11211),
    ("10.0.0.11", 11211),  # a string, not a tuple
    (("10.0.0.11,10.0.0.12",), 11211),
    (("10.0.0.11 -d",), 11211),
    (("",), 11211),
    (("10.0.0.11",), 0),
    (("10.0.0.11",), 70000),
])
def test_memcached_listen_rejected(listen, port):
    for render in (render_memcached_conf_debian, render_memcached_sysconfig):
        with pytest.raises(TcsessionError) as err:
            render(b"-l 127.0.0.1\n", listen, port)
        one_line(err)


def test_memcached_all_addresses_only_when_asked():
    out = render_memcached_conf_debian(DEBIAN_MEMCACHED.read_bytes(), ("0.0.0.0",), 11211)
    assert "-l 0.0.0.0\n" in out.decode()


def test_rhel_sysconfig():
    data = RHEL_SYSCONFIG.read_bytes()
    out = render_memcached_sysconfig(data, LISTEN, 11311)
    golden("rhel9-sysconfig-memcached", out)
    removed, added = diff(data, out)
    assert removed == ['PORT="11211"', 'OPTIONS="-l 127.0.0.1,::1"']
    assert added == ['PORT="11311"', 'OPTIONS="-l 10.0.0.11,127.0.0.1"']
    assert render_memcached_sysconfig(out, LISTEN, 11311) == out


def test_rhel_sysconfig_variants():
    centos7 = b'PORT="11211"\nUSER="memcached"\nMAXCONN="1024"\nCACHESIZE="64"\nOPTIONS=""\n'
    assert render_memcached_sysconfig(centos7, ("10.0.0.11",), 11211) == centos7.replace(
        b'OPTIONS=""', b'OPTIONS="-l 10.0.0.11"')
    mixed = b"# mine\nOPTIONS='-U 0 -l 0.0.0.0 -vv --listen=:: -p 1'\nPORT=11211\n"
    out = render_memcached_sysconfig(mixed, ("10.0.0.11",), 11212)
    assert out == b"# mine\nOPTIONS='-U 0 -l 10.0.0.11 -vv -p 11212'\nPORT=11212\n"
    assert render_memcached_sysconfig(out, ("10.0.0.11",), 11212) == out
    assert render_memcached_sysconfig(b"USER=memcached", ("10.0.0.11",), 11211) == (
        b'USER=memcached\nPORT="11211"\nOPTIONS="-l 10.0.0.11"\n')
    assert render_memcached_sysconfig(b"OPTIONS=-vv\n", ("10.0.0.11",), 11211) == (
        b'OPTIONS="-l 10.0.0.11 -vv"\nPORT="11211"\n')
    with pytest.raises(TcsessionError):
        render_memcached_sysconfig(b'OPTIONS="-l 1\n', LISTEN, 11211)
