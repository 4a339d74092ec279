"""The operator's applications: [app.NAME] in the inventory, the WAR checks on this machine (with the
real migration tool and real javax class files), and how a rollout is planned (the WAR written only
inside each node's drained restart, one node at a time) and rolled back."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from sampleapp import JAVAX_JAR, build_war
from tcsession import apps, msmjars, shell
from tcsession import plan as planning
from tcsession.errors import TcsessionError
from tcsession.facts import FileFact, parse_facts
from tcsession.inventory import parse_inventory
from tcsession.modes import MSM
from tcsession.rollback import plan_rollback, restore_changes
from tcsession.state import Record
from tcsession.steps import CountSessions, RestartTomcat, RestoreFiles, WriteFiles, judge_log_gate, manifest_for

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data" / "facts"


def lab_inventory(tmp_path: Path, app: str):
    path = tmp_path / "hosts.toml"
    text = (ROOT / "hosts.toml").read_text() + "\n" + app
    path.write_text(text)
    return parse_inventory(text, path)


# --------------------------------------------------------------------------- inventory


def test_app_tables_default_the_context_and_resolve_the_war(tmp_path):
    build_war(tmp_path / "shop.war", "1")
    inv = lab_inventory(tmp_path, '[app.shop]\nwar = "shop.war"\n[app.admin]\nwar = "shop.war"\ncontext = "/ops/admin"\n')
    assert [(a.name, a.context, a.base_name, a.jakarta) for a in inv.apps] == [
        ("shop", "/shop", "shop", "convert"), ("admin", "/ops/admin", "ops#admin", "convert")]
    assert inv.apps[0].war == tmp_path / "shop.war"


@pytest.mark.parametrize("app, says", [
    ('[app.shop]\nwar = "missing.war"\n', '[app.shop] war = "missing.war": no such file'),
    ('[app.shop]\ncontext = "/shop"\n', "[app.shop] has no war; add war = "),
    ('[app.shop]\nwar = "shop.war"\ncontext = "shop"\n', 'context = "shop" is not a context path'),
    ('[app.shop]\nwar = "shop.war"\ncontext = "/"\n', "root context, which the tcsession test page"),
    ('[app.shop]\nwar = "shop.war"\njakarta = "yes"\n', 'jakarta = "yes" is not one of "convert", "refuse"'),
    ('[app.shop]\nwar = "shop.war"\nwarr = 1\n', 'unknown key "warr"; did you mean "war"?'),
    ('[app.a]\nwar = "shop.war"\ncontext = "/x"\n[app.b]\nwar = "shop.war"\ncontext = "/x"\n',
     '[app.b] context "/x" is already used by [app.a]'),
])
def test_bad_app_tables_are_one_line_naming_file_table_key_and_fix(tmp_path, app, says):
    build_war(tmp_path / "shop.war", "1")
    with pytest.raises(TcsessionError) as e:
        lab_inventory(tmp_path, app)
    msg = str(e.value)
    assert says in msg and "\n" not in msg and msg.startswith(str(tmp_path / "hosts.toml")), msg


# --------------------------------------------------------------------------- checks on this machine


def app_of(tmp_path, war: Path, jakarta="convert"):
    return lab_inventory(tmp_path, f'[app.sample]\nwar = "{war.name}"\njakarta = "{jakarta}"\n').apps[0]


def test_a_distributable_jsp_war_passes_on_both_namespaces_unchanged(tmp_path):
    war = build_war(tmp_path / "s.war", "1")
    a = app_of(tmp_path, war)
    for major in (9, 10):
        for mode in ("delta", "msm"):
            w = apps.prepare_app(a, mode, major, tmp_path / "cache")
            assert w.data == war.read_bytes() and not w.converted


def test_delta_mode_refuses_a_war_without_distributable(tmp_path):
    a = app_of(tmp_path, build_war(tmp_path / "s.war", "1", distributable=False))
    with pytest.raises(TcsessionError, match=r"has no <distributable/>.*tcsession changed nothing"):
        apps.prepare_app(a, "delta", 10, tmp_path / "cache")
    assert apps.prepare_app(a, "msm", 10, tmp_path / "cache").data  # msm keeps sessions without it


def test_not_a_war_is_refused(tmp_path):
    (tmp_path / "x.war").write_bytes(b"PK not really")
    with pytest.raises(TcsessionError, match="not a WAR"):
        apps.prepare_app(app_of(tmp_path, tmp_path / "x.war"), "msm", 10)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("README.txt", "hello")
    (tmp_path / "y.war").write_bytes(buf.getvalue())
    with pytest.raises(TcsessionError, match="no WEB-INF/web.xml, no WEB-INF/classes or lib"):
        apps.prepare_app(app_of(tmp_path, tmp_path / "y.war"), "msm", 10)


@pytest.mark.skipif(not JAVAX_JAR.is_file(), reason="needs ../shared/fixtures/msm (javax class files)")
def test_a_javax_war_onto_tomcat_10_is_refused_or_converted(tmp_path):
    war = build_war(tmp_path / "s.war", "1", javax_lib=True)
    assert apps.war_namespaces(war.read_bytes(), "s.war") == {"javax"}
    assert apps.prepare_app(app_of(tmp_path, war), "delta", 9, tmp_path / "cache").data == war.read_bytes()
    with pytest.raises(TcsessionError) as e:
        apps.prepare_app(app_of(tmp_path, war, "refuse"), "delta", 10, tmp_path / "cache")
    assert "refers to javax.servlet classes, which Tomcat 10 does not have" in str(e.value)
    if shutil.which("javax2jakarta") is None:
        pytest.fail("javax2jakarta missing: ./dev.sh setup installs tomcat-jakartaee-migration")
    w = apps.prepare_app(app_of(tmp_path, war), "delta", 10, tmp_path / "cache")
    assert w.converted and apps.war_namespaces(w.data, "converted") == {"jakarta"}
    assert apps.prepare_app(app_of(tmp_path, war), "delta", 10, tmp_path / "cache").data == w.data  # cached
    with pytest.raises(TcsessionError, match="refers to jakarta.servlet classes, which Tomcat 9"):
        (tmp_path / "j.war").write_bytes(w.data)
        apps.prepare_app(app_of(tmp_path, tmp_path / "j.war"), "delta", 9, tmp_path / "cache")


# --------------------------------------------------------------------------- planning


@pytest.fixture
def deployed():
    return {n: parse_facts((DATA / f"deployed-{n}.txt").read_text()) for n in ("nginx", "tomcat1", "tomcat2")}


def with_war(facts, data: bytes):
    path = "/var/lib/tomcat10/webapps/sample.war"
    return {n: dataclasses.replace(f, files={**f.files, path: FileFact(path, data, "644", "root:root")})
            if n != "nginx" else f for n, f in facts.items()}


def test_a_new_war_is_recorded_first_and_written_inside_each_drained_restart(tmp_path, deployed):
    v1 = build_war(tmp_path / "v1.war", "1")
    v2 = build_war(tmp_path / "v2.war", "2")
    inv = lab_inventory(tmp_path, '[app.sample]\nwar = "v2.war"\n')
    wars = apps.prepare_apps(inv.apps, "delta", {"tomcat1": 10, "tomcat2": 10})
    p = planning.plan(inv, with_war(deployed, v1.read_bytes()), "delta", wars=wars)
    writes = [s for s in p.steps if isinstance(s, WriteFiles)]
    restarts = [s for s in p.steps if isinstance(s, RestartTomcat)]
    assert [s.host for s in writes] == ["tomcat1", "tomcat2"] and [s.host for s in restarts] == ["tomcat1", "tomcat2"]
    for w, r in zip(writes, restarts):
        assert w.changes == () and [c.path for c in w.deferred] == ["/var/lib/tomcat10/webapps/sample.war"]
        assert w.manifest.files[0].before_sha256 == hashlib.sha256(v1.read_bytes()).hexdigest()
        assert w.manifest.files[0].saved == "files/0"  # prior bytes saved before anything changes
        assert r.files == w.deferred and r.app_contexts == ("/sample",) and r.drain is not None
        assert r.waits_for_state and r.why == "its applications change: /sample"
        assert r.clear == ("/var/lib/tomcat10/webapps/sample", "/var/lib/tomcat10/work/Catalina/localhost/sample")
        script = r.script()
        # stopped, written, the old expansion removed, started, checked: in that order
        order = [script.index(x) for x in ("systemctl stop tomcat10", "sample.war.tcsession.",
                                           "rm -rf /var/lib/tomcat10/webapps/sample", "systemctl restart tomcat10",
                                           "http://10.153.0.1", "/sample/")]
        assert order == sorted(order), script[:400]
    line = next(l for l in p.lines() if l.startswith("tomcat1") and "sample.war" in l and "stop" in l)
    assert (f"sample.war sha256 {hashlib.sha256(v1.read_bytes()).hexdigest()[:12]} ({len(v1.read_bytes())} bytes) -> "
            f"{hashlib.sha256(v2.read_bytes()).hexdigest()[:12]} ({len(v2.read_bytes())} bytes)") in line
    # the same WAR everywhere: nothing to do
    same = planning.plan(inv, with_war(deployed, v2.read_bytes()), "delta", wars=wars)
    assert same.empty, same.lines()


def test_msm_mode_puts_the_manager_in_a_context_descriptor_tcsession_owns(tmp_path, deployed):
    build_war(tmp_path / "v1.war", "1")
    inv = lab_inventory(tmp_path, '[app.sample]\nwar = "v1.war"\n')
    wars = apps.prepare_apps(inv.apps, "msm", {"tomcat1": 10, "tomcat2": 10})
    changes = planning.plan_apps(inv, inv.tomcats[1], deployed["tomcat2"].tomcat, deployed["tomcat2"].files,
                                 MSM,
                                 wars["tomcat2"])
    ctx = next(c for c in changes if c.path == "/etc/tomcat10/Catalina/localhost/sample.xml")
    assert b"de.javakaffee.web.msm.MemcachedBackupSessionManager" in ctx.after and b'failoverNodes="n2"' in ctx.after
    assert apps.is_app_file(ctx.path) and apps.is_app_file("/var/lib/tomcat10/webapps/sample.war")
    assert not apps.is_app_file("/var/lib/tomcat10/webapps/ROOT/test.jsp")


def test_rollback_puts_the_war_back_inside_each_drained_restart(tmp_path, deployed):
    v1, v2 = build_war(tmp_path / "v1.war", "1").read_bytes(), build_war(tmp_path / "v2.war", "2").read_bytes()
    inv = lab_inventory(tmp_path, '[app.sample]\nwar = "v2.war"\n')
    path = "/var/lib/tomcat10/webapps/sample.war"
    deploy_id = "20261201T101010Z-abcdef"
    change = planning.FileChange(path, v1, v2, "644", "root:root", "644", "root:root")
    records, current = {}, {}
    for t in ("tomcat1", "tomcat2"):
        m = manifest_for(deploy_id, "delta", "t", (change,), (), {"tomcat10": "active", "nginx": "active"})
        records[t] = Record(t, m)
        current[t] = {path: FileFact(path, v2, "644", "root:root"),
                      f"/var/lib/tcsession/deploys/{deploy_id}/files/0": FileFact("x", v1, "600", "root:root")}
    facts = with_war(deployed, v2)
    p = plan_rollback(inv, records, current, facts)
    restores = [s for s in p.steps if isinstance(s, RestoreFiles)]
    restarts = [s for s in p.steps if isinstance(s, RestartTomcat)]
    assert all(s.changes == () for s in restores)  # marked rolled back; the WAR waits for the restart
    assert [s.host for s in restarts] == ["tomcat1", "tomcat2"]
    for r in restarts:
        assert [(c.path, c.after) for c in r.files] == [(path, v1)] and r.app_contexts == ("/sample",)
        assert r.drain is not None and "/var/lib/tomcat10/webapps/sample" in r.clear
    # a node the rollout never reached (its WAR still the old bytes) has nothing to restore
    current["tomcat2"][path] = FileFact(path, v1, "644", "root:root")
    changes, conflicts = restore_changes(records["tomcat2"], current["tomcat2"])
    assert changes == () and conflicts == ()


def test_a_failed_application_start_is_one_line_with_its_log():
    script = shell.restart_tomcat("tomcat10", "10.0.0.2", 8080, "/test.jsp", False, 5, "d", False,
                                  [("/v/webapps/a.war", b"x", "root:root", "644")], (), ("/a",))
    assert "/a answered ${c:-nothing} after the start (the application did not come up)" in script
    assert "journalctl -u tomcat10" in script.split("000|404|5*)", 1)[1].split("systemctl stop", 1)[0]


def test_history_names_the_war_checksums(tmp_path):
    from tcsession.ui import war_versions

    change = planning.FileChange("/var/lib/tomcat10/webapps/shop.war", None, b"v2", "644", "root:root")
    m = manifest_for("20261201T101010Z-abcdef", "delta", "t", (change,))
    recs = [Record(h, m) for h in ("tomcat1", "tomcat2")]
    assert war_versions(recs) == f"shop.war {hashlib.sha256(b'v2').hexdigest()[:12]}"


def test_the_preview_shows_each_war_with_old_and_new_checksum_size_and_order(tmp_path, deployed, capsys):
    from tcsession.ui import Progress

    v1 = build_war(tmp_path / "v1.war", "1").read_bytes()
    v2 = build_war(tmp_path / "v2.war", "2").read_bytes()
    inv = lab_inventory(tmp_path, '[app.sample]\nwar = "v2.war"\n')
    wars = apps.prepare_apps(inv.apps, "delta", {"tomcat1": 10, "tomcat2": 10})
    p = planning.plan(inv, with_war(deployed, v1), "delta", wars=wars)
    Progress().plan(p, diffs=True)
    out = " ".join(capsys.readouterr().out.split())
    sha = lambda b: hashlib.sha256(b).hexdigest()  # noqa: E731
    binary = (f"binary /var/lib/tomcat10/webapps/sample.war: sha256 {sha(v1)} ({len(v1)} bytes) -> "
              f"{sha(v2)} ({len(v2)} bytes)")
    assert out.count(binary) == 2, out
    assert out.index("tomcat1 restart tomcat10 (stopped: put sample.war") < out.index("tomcat2 restart tomcat10 (stopped: put sample.war")


def test_status_shows_each_nodes_war_and_flags_different_versions(tmp_path, deployed):
    from tcsession import status

    v1 = build_war(tmp_path / "v1.war", "1").read_bytes()
    v2 = build_war(tmp_path / "v2.war", "2").read_bytes()
    inv = lab_inventory(tmp_path, '[app.sample]\nwar = "v2.war"\n')
    facts = with_war(deployed, v1)
    facts["tomcat1"] = dataclasses.replace(facts["tomcat1"], app_http={"/sample": "200"})
    facts["tomcat2"] = dataclasses.replace(with_war(deployed, v2)["tomcat2"], app_http={"/sample": "404"})
    checks = {h: {w: (ok, d) for w, ok, d in status.judge_tomcat(inv, inv.host(h), facts[h], "delta").checks}
              for h in ("tomcat1", "tomcat2")}
    sha = lambda b: hashlib.sha256(b).hexdigest()  # noqa: E731
    assert checks["tomcat1"]["app /sample"] == (True, f"sample.war sha256 {sha(v1)[:12]}, HTTP 200")
    assert checks["tomcat2"]["app /sample"] == (False, f"sample.war sha256 {sha(v2)[:12]}, HTTP 404 (the context is not running)")
    report = status.Report((), "delta", apps=(("/sample", (("tomcat1", sha(v1), "200"), ("tomcat2", sha(v2), "404"))),))
    assert report.app_problems == [f"application /sample: the nodes serve different versions: tomcat1 {sha(v1)[:12]}, "
                                   f"tomcat2 {sha(v2)[:12]}"] and not report.healthy
    same = status.Report((), "delta", apps=(("/sample", (("tomcat1", sha(v1), "200"), ("tomcat2", sha(v1), "200"))),))
    assert same.app_problems == [] and same.healthy
    # the HTTP status comes from the facts' app-http sections
    assert parse_facts("@@app-http /sample\n302\n").app_http == {"/sample": "302"}


# --------------------------------------------------------------------------- the session-compatibility gate


def cart_wars(tmp_path, **carts):
    from sampleapp import build_war as build

    return {k: build(tmp_path / f"{k}.war", "1", cart=src).read_bytes() for k, src in carts.items()}


def gate_plan(tmp_path, deployed, old: bytes, new: bytes, sessions: str = "keep", mode: str = "delta"):
    (tmp_path / "new.war").write_bytes(new)
    extra = f'sessions = "{sessions}"\n' if sessions != "keep" else ""
    inv = lab_inventory(tmp_path, f'[app.sample]\nwar = "new.war"\n{extra}')
    wars = apps.prepare_apps(inv.apps, mode, {"tomcat1": 10, "tomcat2": 10})
    return planning.plan(inv, with_war(deployed, old), mode, wars=wars)


def test_a_session_class_whose_declared_value_changed_is_refused_naming_it(tmp_path, deployed):
    from sampleapp import CART_V1, CART_V2

    w = cart_wars(tmp_path, v1=CART_V1, v2=CART_V2)
    with pytest.raises(TcsessionError) as e:
        gate_plan(tmp_path, deployed, w["v1"], w["v2"])
    lines = str(e.value).splitlines()
    assert lines[0].startswith(f"[app.sample] war {tmp_path / 'new.war'}: 1 Serializable class changed "
                               "serialVersionUID since the version tomcat1, tomcat2 run (sha256 ")
    assert lines[1] == ("  sample.Cart (WEB-INF/classes): serialVersionUID 1L -> 2L: the declared value changed; "
                        "declare private static final long serialVersionUID = 1L; in sample.Cart")
    assert lines[2].startswith("refusing the rollout: declare the old values") and 'sessions = "drop" in [app.sample]' in lines[2]
    assert lines[2].endswith("(tcsession changed nothing)") and len(lines) == 3


def test_an_undeclared_session_class_that_gains_a_field_is_refused_saying_why(tmp_path, deployed):
    from sampleapp import CART_COMPUTED, CART_COMPUTED_FIELD

    w = cart_wars(tmp_path, a=CART_COMPUTED, b=CART_COMPUTED_FIELD)
    with pytest.raises(TcsessionError, match=r"sample.Cart \(WEB-INF/classes\): serialVersionUID -?\d+L -> -?\d+L: "
                                             r"computed \(none declared\) and the class changed: field\(s\) added: added; "
                                             r"declare private static final long serialVersionUID = -?\d+L; in sample.Cart"):
        gate_plan(tmp_path, deployed, w["a"], w["b"])


def test_a_field_added_under_the_same_value_rolls_and_each_restart_reads_its_peers_logs(tmp_path, deployed):
    from sampleapp import CART_FIELD, CART_V1

    w = cart_wars(tmp_path, v1=CART_V1, v2=CART_FIELD)
    p = gate_plan(tmp_path, deployed, w["v1"], w["v2"])
    restarts = [s for s in p.steps if isinstance(s, RestartTomcat)]
    assert [(s.host, s.peers, s.dropped) for s in restarts] == [
        ("tomcat1", (("tomcat2", "tomcat10"),), ()), ("tomcat2", (("tomcat1", "tomcat10"),), ())]
    assert "and the logs of tomcat2" in restarts[0].describe()
    assert not any(isinstance(s, CountSessions) for s in p.steps)
    inv = lab_inventory(tmp_path, '[app.sample]\nwar = "new.war"\n')
    (c,) = planning.session_comparisons(inv, with_war(deployed, w["v1"]),
                                        apps.prepare_apps(inv.apps, "delta", {"tomcat1": 10, "tomcat2": 10}))
    assert c.summary() == ("app sample: 1 Serializable class(es) shared with the version tomcat1, tomcat2 run: "
                           "same serialVersionUIDs, its sessions carry over")


def test_sessions_drop_rolls_after_each_node_says_how_many_sessions_it_holds(tmp_path, deployed):
    from sampleapp import CART_V1, CART_V2

    w = cart_wars(tmp_path, v1=CART_V1, v2=CART_V2)
    p = gate_plan(tmp_path, deployed, w["v1"], w["v2"], sessions="drop")
    counts = [s for s in p.steps if isinstance(s, CountSessions)]
    assert p.steps[:2] == tuple(counts) and [c.host for c in counts] == ["tomcat1", "tomcat2"]
    assert counts[0].contexts == ("/sample",) and counts[0].classes == ("sample.Cart",) and counts[0].memcached is None
    assert 'sessions = "drop": the new version cannot read them: sample.Cart' in counts[0].describe()
    assert all(s.dropped == ("sample.Cart",) for s in p.steps if isinstance(s, RestartTomcat))
    inv = lab_inventory(tmp_path, '[app.sample]\nwar = "new.war"\nsessions = "drop"\n')
    (c,) = planning.session_comparisons(inv, with_war(deployed, w["v1"]),
                                        apps.prepare_apps(inv.apps, "delta", {"tomcat1": 10, "tomcat2": 10}))
    assert c.summary().endswith(': 1 changed (sample.Cart); sessions = "drop"')
    # what the node answers, as the deploy says it
    assert counts[0].counts("sessions: /sample 7\n") == {"/sample": 7}
    assert counts[0].done("sessions: /sample 7\n") == ('holds 7 session(s) of /sample: lost with this rollout '
                                                       '(sessions = "drop")')
    assert counts[0].counts("sessions: not running\n") == {"/sample": 0}
    said = counts[0].done("sessions: unknown AttachNotSupportedException: no such process \n")
    assert said.startswith("holds an unknown number of session(s) of /sample") and "no such process" in said
    script = counts[0].script()
    assert "nsenter -t \"$pid\" -m" in script and "runuser -u" in script and "CountSessions.java" in script
    assert "/sample" in script
    # msm: this host's memcached node is asked too
    inv = lab_inventory(tmp_path, '[app.sample]\nwar = "new.war"\nsessions = "drop"\n')
    facts = with_war(deployed, w["v1"])
    breaks = planning.session_breaks(inv, facts, apps.prepare_apps(inv.apps, "msm", {"tomcat1": 10, "tomcat2": 10}))
    c = planning.count_sessions(inv, facts, MSM, breaks)[1]
    assert c.memcached == (inv.tomcats[1].address, 11211) and "memcached-sessions" in c.script()
    assert c.counts("sessions: /sample 0\nmemcached-sessions: 10.153.0.111:11211 5\n") == {
        "/sample": 0, "memcached 10.153.0.111:11211": 5}


def test_sessions_drop_from_a_mixed_cluster_expects_the_classes_only_one_version_has(tmp_path, deployed):
    """tomcat1 runs a version with sample.Extra, which tomcat2's lacks: tomcat2 logs
    ClassNotFoundException for the sessions tomcat1 replicates, before the rollout and during it;
    with sessions = "drop" those lines are expected, like the changed Cart's."""
    from sampleapp import CART_V1, CART_V2
    from sampleapp import build_war as build

    extra = build(tmp_path / "extra.war", "1", cart=CART_V1, extra=True).read_bytes()
    v1, v2 = (build(tmp_path / f"{k}.war", "1", cart=c).read_bytes() for k, c in (("v1", CART_V1), ("v2", CART_V2)))
    mixed = with_war(deployed, v1)
    mixed["tomcat1"] = with_war({"tomcat1": deployed["tomcat1"]}, extra)["tomcat1"]
    (tmp_path / "new.war").write_bytes(v2)
    inv = lab_inventory(tmp_path, '[app.sample]\nwar = "new.war"\nsessions = "drop"\n')
    p = planning.plan(inv, mixed, "delta", wars=apps.prepare_apps(inv.apps, "delta", {"tomcat1": 10, "tomcat2": 10}))
    restarts = [s for s in p.steps if isinstance(s, RestartTomcat)]
    assert [s.dropped for s in restarts] == [("sample.Cart", "sample.Extra")] * 2
    lines = ["SEVERE Manager [localhost#/sample]: Unable to receive message through TCP channel",
             "SEVERE java.lang.ClassNotFoundException: sample.Extra"]  # tomcat2's, in the lab
    assert judge_log_gate(lines, restarts[0].dropped) is None
    assert judge_log_gate(lines, ("sample.Cart",)) is not None  # what the gate said before


def test_the_sessions_key_takes_keep_or_drop(tmp_path):
    build_war(tmp_path / "shop.war", "1")
    assert lab_inventory(tmp_path, '[app.shop]\nwar = "shop.war"\n').apps[0].sessions == "keep"
    with pytest.raises(TcsessionError, match=r'\[app.shop\] sessions = "lose" is not one of "keep", "drop"'):
        lab_inventory(tmp_path, '[app.shop]\nwar = "shop.war"\nsessions = "lose"\n')


def test_the_session_count_program_compiles_against_the_jdk(tmp_path):
    """The Java the count runs on a node (its source launcher compiles it there): compiled here."""
    javac = shutil.which("javac")
    if javac is None:
        pytest.skip("no javac")
    (tmp_path / "CountSessions.java").write_text(shell.COUNT_SESSIONS_JAVA)
    r = subprocess.run([javac, "--release", "11", "-d", str(tmp_path), str(tmp_path / "CountSessions.java")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "CountSessions.class").is_file()


def test_the_memcached_count_keeps_msms_session_keys_only():
    """The count's memcached part, run by bash against a stand-in memcached on loopback answering
    `lru_crawler metadump all` as memcached 1.6 does (keys URL-encoded)."""
    import socket
    import threading

    keys = ["A1B2-n1", "validity%3AA1B2-n1", "bak%3AC3D4-n2", "bak%3Avalidity%3AC3D4-n2", "lock%3AA1B2-n1",
            "E5F6-n1"]
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    asked = []

    def serve():
        conn, _ = server.accept()
        with conn:
            asked.append(conn.recv(1024))
            conn.sendall(b"".join(f"key={k} exp=-1 la=1 cas=1 fetch=no cls=1 size=80\r\n".encode() for k in keys)
                         + b"END\r\n")
            conn.recv(1024)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    whole = shell.count_sessions("no-such-unit-tcsession", ["/shop"], ("127.0.0.1", port))
    script = whole[whole.index("timeout 20 bash"):]  # its memcached part (the JVM part needs a Tomcat)
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30).stdout
    t.join(5)
    server.close()
    assert asked == [b"lru_crawler metadump all\r\n"]
    assert out.strip() == f"memcached-sessions: 127.0.0.1:{port} 2"
