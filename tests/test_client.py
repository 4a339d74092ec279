"""The one definition of "the same session, one request later" (tcsession.client.judge_step),
with session ids as the lab printed them, and the client that uses it against a local server
that renames the session the way memcached-session-manager does on failover."""

from __future__ import annotations

import http.server
import threading

import pytest

from tcsession.client import SessionClient, judge_step, parse_session_id, session_base
from tcsession.load import Load

# Seen in the bookworm lab with the real MSM jars (sticky, tomcat1 stopped, tomcat2 went on).
MSM_BEFORE = "56A0165CAEFDD8E9BBEB06931C68C397-n2.tomcat1"
MSM_AFTER = "56A0165CAEFDD8E9BBEB06931C68C397-n1.tomcat2"
MSM_ROTATED = "DBC0FE3A583EF0791B88475629B880E6-n2.tomcat1"


@pytest.mark.parametrize("mode, raw, base, node, route", [
    ("delta", "5A3F9C0E7B.tomcat1", "5A3F9C0E7B", None, "tomcat1"),
    ("delta", "5A3F9C0E7B", "5A3F9C0E7B", None, None),
    (None, "5A3F9C0E7B.tomcat2", "5A3F9C0E7B", None, "tomcat2"),
    ("msm", MSM_BEFORE, "56A0165CAEFDD8E9BBEB06931C68C397", "n2", "tomcat1"),
    ("msm", MSM_AFTER, "56A0165CAEFDD8E9BBEB06931C68C397", "n1", "tomcat2"),
    ("msm", "56A0165CAEFDD8E9BBEB06931C68C397-n1", "56A0165CAEFDD8E9BBEB06931C68C397", "n1", None),  # non-sticky
    # delta knows nothing of MSM's node id: it is part of the base there
    ("delta", MSM_BEFORE, "56A0165CAEFDD8E9BBEB06931C68C397-n2", None, "tomcat1"),
])
def test_session_ids_are_taken_apart_by_mode(mode, raw, base, node, route):
    sid = parse_session_id(raw, mode)
    assert (sid.raw, sid.base, sid.node, sid.route) == (raw, base, node, route)
    assert session_base(raw, mode) == base


def test_msm_failover_rename_is_the_same_session():
    step = judge_step(MSM_BEFORE, 40, MSM_AFTER, 41, "msm")
    assert step.same_session and step.lost_updates == 0 and step.error is None


def test_msm_rename_judged_with_delta_rules_is_a_loss():
    """Why the mode matters: the bug of issue 13 (a renamed msm session called lost)."""
    step = judge_step(MSM_BEFORE, 40, MSM_AFTER, 41, "delta")
    assert not step.same_session and step.lost_updates == 40 + 40  # the old 40, and 41 is not 1
    assert "the session was lost" in step.error


def test_delta_route_change_is_the_same_session():
    assert judge_step("5A3F.tomcat1", 5, "5A3F.tomcat2", 6, "delta") == judge_step(None, 0, "X", 1)


@pytest.mark.parametrize("mode", ["delta", "msm"])
def test_a_new_base_id_is_a_lost_session(mode):
    new = "0000000000000000000000000000000A-n1.tomcat2" if mode == "msm" else "0000A.tomcat2"
    old = MSM_BEFORE if mode == "msm" else "5A3F.tomcat1"
    step = judge_step(old, 12, new, 1, mode)
    assert not step.same_session and step.lost_updates == 12
    assert step.error == f"new session {new} (was {old}): the session was lost"


@pytest.mark.parametrize("count, lost", [(41, 0), (40, 1), (42, 1), (1, 40), (45, 4)])
def test_the_count_must_rise_by_one(count, lost):
    step = judge_step(MSM_BEFORE, 40, MSM_AFTER, count, "msm")
    assert step.same_session and step.lost_updates == lost
    assert (step.error is None) == (lost == 0)
    if lost:
        assert step.error == f"count {count} after 40"


def test_a_rotated_id_is_the_same_session_only_when_asked_for():
    assert judge_step(MSM_ROTATED, 3, MSM_BEFORE, 4, "msm", rotated=True).lost_updates == 0
    assert judge_step(MSM_ROTATED, 3, MSM_BEFORE, 4, "msm").lost_updates == 3 + 3
    assert judge_step(MSM_ROTATED, 3, MSM_BEFORE, 7, "msm", rotated=True).lost_updates == 3  # still counted


def test_the_first_request_must_start_at_one():
    assert judge_step(None, 0, MSM_BEFORE, 1, "msm").lost_updates == 0
    assert judge_step(None, 0, MSM_BEFORE, 3, "msm").lost_updates == 2


class _MsmLikeServer(http.server.ThreadingHTTPServer):
    """Serves the test page's line; after `fail_over_at` requests it answers as the other node
    with the id renamed the way MSM renames it (and sets the new cookie)."""

    def __init__(self, fail_over_at: int):
        self.fail_over_at, self.counts, self.served = fail_over_at, {}, 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        srv: _MsmLikeServer = self.server
        cookie = (self.headers.get("Cookie") or "").partition("JSESSIONID=")[2] or None
        with srv.lock:
            srv.served += 1
            over = srv.served > srv.fail_over_at
            base = cookie.split("-")[0] if cookie else f"{len(srv.counts) + 1:032X}"
            srv.counts[base] = srv.counts.get(base, 0) + 1
            count = srv.counts[base]
        node, sid = ("tomcat2", f"{base}-n1.tomcat2") if over else ("tomcat1", f"{base}-n2.tomcat1")
        body = f"tcsession test application\nnode={node} session={sid} count={count}\n".encode()
        self.send_response(200)
        if sid != cookie:
            self.send_header("Set-Cookie", f"JSESSIONID={sid}; Path=/; HttpOnly")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def msm_like():
    servers = []

    def start(fail_over_at: int) -> _MsmLikeServer:
        srv = _MsmLikeServer(fail_over_at)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def test_client_follows_an_msm_failover(msm_like):
    srv = msm_like(fail_over_at=5)
    client = SessionClient("127.0.0.1", srv.server_address[1], mode="msm")
    for _ in range(8):
        client.request()
    run = client.run
    assert run.ok and run.last_count == 8, run.to_dict()
    assert dict(run.nodes) == {"tomcat1": 5, "tomcat2": 3}
    assert len(set(run.session_ids)) == 2 and run.cookie.endswith("-n1.tomcat2")


def test_client_in_delta_mode_calls_the_same_rename_lost(msm_like):
    srv = msm_like(fail_over_at=5)
    client = SessionClient("127.0.0.1", srv.server_address[1], mode="delta")
    for _ in range(8):
        client.request()
    assert not client.run.ok and client.run.lost_updates > 0
    assert "the session was lost" in client.run.errors[0]


def test_load_uses_the_mode(msm_like):
    srv = msm_like(fail_over_at=10)
    with Load("127.0.0.1", srv.server_address[1], sessions=3, rate=60, max_seconds=5, mode="msm") as load:
        deadline = threading.Event()
        deadline.wait(1.0)
    result = load.result
    assert result.requests > 20 and (result.failed, result.lost_updates) == (0, 0), result.errors
