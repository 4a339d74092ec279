"""The blog's client, done properly: one session through nginx, a run of requests, and the
counter checked at every step (each request must see the previous count plus one)."""

from __future__ import annotations

import dataclasses
import http.client
import time
from collections import Counter

from tcsession.webapp import parse_test_line


@dataclasses.dataclass
class SessionRun:
    requests: int = 0
    failed: int = 0  # no answer, or not the test page
    lost_updates: int = 0  # a count that is not the previous plus one
    nodes: Counter = dataclasses.field(default_factory=Counter)
    session_ids: list = dataclasses.field(default_factory=list)
    last_count: int = 0
    errors: list = dataclasses.field(default_factory=list)
    cookie: str | None = None
    last_node: str | None = None

    @property
    def ok(self) -> bool:
        return self.requests > 0 and self.failed == 0 and self.lost_updates == 0

    def to_dict(self) -> dict:
        return {"requests": self.requests, "failed": self.failed, "lost_updates": self.lost_updates,
                "nodes": dict(self.nodes), "last_count": self.last_count,
                "session_ids": sorted(set(self.session_ids)), "errors": self.errors[:5]}


def session_base(session_id: str) -> str:
    """The id without its `.jvmRoute` suffix (which changes when a session fails over)."""
    return session_id.split(".", 1)[0]


class SessionClient:
    """A cookie-keeping client for one session; `request()` does one step and checks it."""

    def __init__(self, host: str, port: int = 80, path: str = "/test.jsp", timeout: float = 10.0):
        self.host, self.port, self.path, self.timeout = host, port, path, timeout
        self.run = SessionRun()

    def request(self) -> None:
        run = self.run
        run.requests += 1
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            headers = {"Cookie": f"JSESSIONID={run.cookie}"} if run.cookie else {}
            conn.request("GET", self.path, headers=headers)
            resp = conn.getresponse()
            body = resp.read().decode("utf-8", "replace")
            for name, value in resp.getheaders():
                if name.lower() == "set-cookie" and value.startswith("JSESSIONID="):
                    run.cookie = value.split(";", 1)[0].split("=", 1)[1]
        except OSError as e:
            run.failed += 1
            run.errors.append(f"request {run.requests}: {e}")
            return
        finally:
            conn.close()
        line = parse_test_line(body) if resp.status == 200 else None
        if line is None:
            run.failed += 1
            run.errors.append(f"request {run.requests}: HTTP {resp.status}, not the test page")
            return
        if run.session_ids and session_base(line.session) != session_base(run.session_ids[-1]):
            run.errors.append(f"request {run.requests}: new session {line.session} "
                              f"(was {run.session_ids[-1]}): the session was lost")
            run.lost_updates += run.last_count
            run.last_count = 0
        if line.count != run.last_count + 1:
            run.lost_updates += abs(run.last_count + 1 - line.count)
            run.errors.append(f"request {run.requests}: count {line.count} after {run.last_count}")
        run.last_count = line.count
        run.session_ids.append(line.session)
        run.nodes[line.node] += 1
        run.last_node = line.node


def check_session(host: str, port: int = 80, requests: int = 10, interval: float = 0.0) -> SessionRun:
    """One session, `requests` requests in a row (bounded), each checked."""
    client = SessionClient(host, port)
    for _ in range(requests):
        client.request()
        if interval:
            time.sleep(interval)
    return client.run
