"""[app] test_page: the lab inventory and hosts.toml want the page, the real example does not,
the default is false; without it a deploy removes the page it placed (saved for rollback), keeps an
operator's page at that path, waits for any HTTP answer, and status skips its session check or
requests check_path through nginx."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import pytest

from tcsession import lab, ui
from tcsession import plan as planning
from tcsession.client import check_path
from tcsession.errors import TcsessionError
from tcsession.facts import FileFact, parse_facts
from tcsession.inventory import load_inventory, parse_inventory
from tcsession.status import SKIPPED, Report
from tcsession.steps import RestartTomcat
from tcsession.webapp import render_test_jsp

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data" / "facts"
PAGE = "/var/lib/tomcat10/webapps/ROOT/test.jsp"


def without_page(extra: str = "") -> object:
    text = (ROOT / "hosts.toml").read_text().replace("test_page = true ", "test_page = false")
    return parse_inventory(text.replace("[delta]\n", extra + "[delta]\n", 1), ROOT / "hosts.toml")


@pytest.fixture
def deployed():
    return {n: parse_facts((DATA / f"deployed-{n}.txt").read_text()) for n in ("nginx", "tomcat1", "tomcat2")}


def test_who_wants_the_page(tmp_path):
    assert load_inventory(ROOT / "hosts.toml").app.test_page is True
    lab_inv = tmp_path / "lab.toml"
    lab_inv.write_text(lab.render_inventory("tcshx", subnet="10.153.30.0/24"))
    assert load_inventory(lab_inv).app.test_page is True
    real = (ROOT / "examples" / "hosts.real.toml").read_text()
    assert "[app]\ntest_page = false\n" in real
    bare = parse_inventory('[nginx.n]\naddress = "192.0.2.10"\n[tomcat.a]\naddress = "192.0.2.11"\n'
                           '[tomcat.b]\naddress = "192.0.2.12"\n[ssh]\nuser = "root"\nagent = true\n', tmp_path / "h.toml")
    assert bare.app.test_page is False and bare.app.check_path == ""


def test_a_bad_check_path_is_one_line():
    with pytest.raises(TcsessionError) as e:
        without_page('[app]\n')  # a second [app] table is a TOML error, named with its line
    assert "\n" not in str(e.value)
    text = (ROOT / "hosts.toml").read_text().replace("# check_path = \"/health\"", 'check_path = "health me"')
    with pytest.raises(TcsessionError) as e:
        parse_inventory(text, Path("site.toml"))
    assert str(e.value).startswith("site.toml: [app] check_path") and 'starting with "/"' in str(e.value)


def test_without_the_page_deploy_removes_the_one_it_placed_and_restarts_nothing(deployed):
    p = planning.plan(without_page(), deployed, "delta")
    for t in ("tomcat1", "tomcat2"):
        (change,) = p.files(t)
        assert change.path == PAGE and change.after is None and change.before == render_test_jsp()
        assert not p.restarts(t)  # the page is not configuration
    # the removal is recorded with the page's bytes: what rollback puts back
    write = next(s for s in p.steps if s.host == "tomcat1" and type(s).__name__ == "WriteFiles")
    assert write.manifest.files[0].path == PAGE


def test_an_operators_page_at_that_path_is_kept(deployed):
    theirs = b"<%= \"their own page\" %>\n"
    f = deployed["tomcat1"]
    deployed["tomcat1"] = type(f)(**{**f.__dict__, "files": {**f.files, PAGE: FileFact(PAGE, theirs, "644", "root:root")}})
    p = planning.plan(without_page(), deployed, "delta")
    assert p.files("tomcat1") == ()
    assert [c.path for c in p.files("tomcat2")] == [PAGE]


def test_without_the_page_the_restart_waits_for_any_answer(deployed):
    inv = parse_inventory((ROOT / "hosts.toml").read_text().replace("test_page = true ", "test_page = false")
                          .replace("channel_send_options = 6", "channel_send_options = 2"), ROOT / "hosts.toml")
    restarts = [s for s in planning.plan(inv, deployed, "delta").steps if isinstance(s, RestartTomcat)]
    assert [s.host for s in restarts] == ["tomcat1", "tomcat2"]
    for s in restarts:
        assert s.test_page is False
        assert "/test.jsp" not in s.script() and "http://10.153.0.11" in s.script() and '"$c" != 000' in s.script()
    with_page = [s for s in planning.plan(load_inventory(ROOT / "hosts.toml"), deployed, "delta").steps
                 if isinstance(s, RestartTomcat)]
    assert with_page == []  # the deployed captures need nothing


def test_status_says_the_session_check_is_skipped():
    report = Report((), "delta", None, 0, session_note=SKIPPED)
    lines = [t for t, _ in ui.render_status(report, 200)]
    assert any("session through nginx: skipped: [app] test_page = false" in t for t in lines)
    assert report.to_dict()["session_check"] == {"skipped": SKIPPED} and report.healthy


class _Pages(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, *a):
        pass


def test_check_path_requests_the_operators_page():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Pages)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        good = check_path("127.0.0.1", srv.server_address[1], "/health", 3)
        bad = check_path("127.0.0.1", srv.server_address[1], "/nope", 2)
    finally:
        srv.shutdown()
    assert good.ok and good.requests == 3 and good.path == "/health"
    assert not bad.ok and bad.errors == ["request 1: HTTP 404", "request 2: HTTP 404"]
    lines = [t for t, _ in ui.render_status(Report((), "delta", bad, 0), 200)]
    assert any(t.startswith("GET /nope through nginx: 2 requests, 2 failed") for t in lines)
