"""The blog's client, done properly: one session through nginx, a run of requests, and the
counter checked at every step (each request must see the previous count plus one)."""

from __future__ import annotations

import dataclasses
import http.client
import re
import ssl
import time
from collections import Counter

from tcsession.webapp import parse_test_line


def cookie_attributes(set_cookie: str) -> tuple[str, ...]:
    """A Set-Cookie header's attributes after the cookie itself, lowercase, without blanks:
    'a=1; Path=/; Secure; SameSite=Lax' -> ("path=/", "secure", "samesite=lax")."""
    return tuple("=".join(p.strip() for p in a.split("=", 1)).lower() for a in set_cookie.split(";")[1:] if a.strip())


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
    # of the last Set-Cookie: JSESSIONID, lowercase, a value after its name: "secure", "httponly", "samesite=lax"
    cookie_attributes: tuple[str, ...] = ()
    last_node: str | None = None
    path: str = "/test.jsp"  # another path: only its HTTP status is judged (see check_path)
    problems: list = dataclasses.field(default_factory=list)  # judged on the whole run (the cookie's flags)

    @property
    def ok(self) -> bool:
        return self.requests > 0 and self.failed == 0 and self.lost_updates == 0 and not self.problems

    def to_dict(self) -> dict:
        d = {"path": self.path, "requests": self.requests, "failed": self.failed, "lost_updates": self.lost_updates,
             "nodes": dict(self.nodes), "last_count": self.last_count,
             "session_ids": sorted(set(self.session_ids)), "errors": self.errors[:5]}
        if self.cookie_attributes or self.problems:
            d["cookie_attributes"] = list(self.cookie_attributes)
            d["problems"] = list(self.problems)
        return d


#: Session id formats, by session mode. delta (and no mode): Tomcat's `<id>.<jvmRoute>`.
#: msm: `<id>-<memcached node id>[.<jvmRoute>]`; MSM renames both suffixes on failover
#: (`<id>-n2.tomcat1` served by tomcat2 becomes `<id>-n1.tomcat2`), the base id stays.
_ID_FORMATS = {
    "delta": re.compile(r"^(?P<base>[^.]+)(?:\.(?P<route>[^.]+))?$"),
    "msm": re.compile(r"^(?P<base>[^.-]+)(?:-(?P<node>[^.-]+))?(?:\.(?P<route>[^.]+))?$"),
}


@dataclasses.dataclass(frozen=True)
class SessionId:
    """A session id taken apart: the base (what identifies the session across nodes), and the
    suffixes a failover may change (the memcached node id in msm mode, the jvmRoute)."""

    raw: str
    base: str
    node: str | None = None  # msm: the memcached node holding the session (n1, n2, ...)
    route: str | None = None  # the jvmRoute of the Tomcat that owns it


def parse_session_id(session_id: str, mode: str | None = "delta") -> SessionId:
    """`session_id` in `mode`'s format (None: delta's). An id that does not fit the format is
    its own base (compared whole)."""
    m = _ID_FORMATS.get(mode or "delta", _ID_FORMATS["delta"]).match(session_id)
    if not m:
        return SessionId(session_id, session_id)
    return SessionId(session_id, m["base"], m.groupdict().get("node"), m["route"])


def session_base(session_id: str, mode: str | None = "delta") -> str:
    """The part of the id that stays when the session fails over."""
    return parse_session_id(session_id, mode).base


@dataclasses.dataclass(frozen=True)
class Step:
    """One request judged against the one before it (see `judge_step`)."""

    same_session: bool
    lost_updates: int
    error: str | None = None


def judge_step(previous_id: str | None, previous_count: int, session_id: str, count: int,
               mode: str | None = "delta", rotated: bool = False) -> Step:
    """THE definition of "the same session, one request later", used by status, load and tests.

    The same session: the base id is unchanged (in msm mode the memcached node id and the
    jvmRoute may change: MSM moves a session on failover), or the request asked for a new id
    (`rotated`: changeSessionId, after which only the count links the two ids). One request
    later: the count is the previous count plus one. A new session costs every update the old
    one had (`previous_count`); a wrong count costs the difference.
    """
    same = (previous_id is None or rotated
            or parse_session_id(session_id, mode).base == parse_session_id(previous_id, mode).base)
    lost, error, expected = 0, None, previous_count + 1
    if not same:
        lost, expected = previous_count, 1
        error = f"new session {session_id} (was {previous_id}): the session was lost"
    if count != expected:
        lost += abs(expected - count)
        error = (error + "; " if error else "") + f"count {count} after {previous_count if same else 0}"
    return Step(same, lost, error)


class VerifiedTls(http.client.HTTPSConnection):
    """HTTPS to an address, verifying the certificate for `server_name` (sent as SNI and Host):
    the way a browser reaches the site by its name, without a resolver."""

    def __init__(self, address: str, port: int, server_name: str, context: ssl.SSLContext, timeout: float):
        super().__init__(address, port, timeout=timeout, context=context)
        self.server_name, self.tls_context = server_name, context

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self.tls_context.wrap_socket(self.sock, server_hostname=self.server_name)


def tls_context(ca: str | None = None) -> ssl.SSLContext:
    """Verification with the system's trust store, or with `ca` (a PEM file) alone."""
    return ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()


def connection(host: str, port: int, timeout: float, server_name: str | None = None,
               context: ssl.SSLContext | None = None) -> http.client.HTTPConnection:
    if server_name is None:
        return http.client.HTTPConnection(host, port, timeout=timeout)
    return VerifiedTls(host, port, server_name, context or tls_context(), timeout)


class SessionClient:
    """A cookie-keeping client for one session; `request()` does one step and checks it.

    `mode` ("delta", "msm"; None: delta's format) says how session ids look (see `judge_step`).
    With `server_name`: over HTTPS, the certificate verified for that name (`context`: whose trust)."""

    def __init__(self, host: str, port: int = 80, path: str = "/test.jsp", timeout: float = 10.0,
                 mode: str | None = "delta", server_name: str | None = None, context: ssl.SSLContext | None = None):
        self.host, self.port, self.path, self.timeout, self.mode = host, port, path, timeout, mode
        self.server_name, self.context = server_name, context
        self.run = SessionRun()

    def request(self, rotate: bool = False) -> None:
        """One request; `rotate`: ask the test page for a new session id (`?rotate=1`)."""
        run = self.run
        run.requests += 1
        conn = connection(self.host, self.port, self.timeout, self.server_name, self.context)
        try:
            headers = {"Cookie": f"JSESSIONID={run.cookie}"} if run.cookie else {}
            if self.server_name:
                headers["Host"] = self.server_name if self.port == 443 else f"{self.server_name}:{self.port}"
            conn.request("GET", self.path + ("?rotate=1" if rotate else ""), headers=headers)
            resp = conn.getresponse()
            body = resp.read().decode("utf-8", "replace")
            for name, value in resp.getheaders():
                if name.lower() == "set-cookie" and value.startswith("JSESSIONID="):
                    run.cookie = value.split(";", 1)[0].split("=", 1)[1]
                    run.cookie_attributes = cookie_attributes(value)
        except (OSError, http.client.HTTPException) as e:  # refused, reset, not HTTP, or a certificate refused
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
        if rotate and "rotated" not in body.split("\n", 1)[0]:
            run.failed += 1
            run.errors.append(f"request {run.requests}: the page did not rotate the session id")
            return
        step = judge_step(run.session_ids[-1] if run.session_ids else None, run.last_count,
                          line.session, line.count, self.mode, rotated=rotate)
        run.lost_updates += step.lost_updates
        if step.error:
            run.errors.append(f"request {run.requests}: {step.error}")
        run.last_count = line.count
        run.session_ids.append(line.session)
        run.nodes[line.node] += 1
        run.last_node = line.node


def check_session(host: str, port: int = 80, requests: int = 10, interval: float = 0.0,
                  mode: str | None = "delta", server_name: str | None = None,
                  context: ssl.SSLContext | None = None) -> SessionRun:
    """One session, `requests` requests in a row (bounded), each checked (over verified HTTPS
    with `server_name`)."""
    client = SessionClient(host, port, mode=mode, server_name=server_name, context=context)
    for _ in range(requests):
        client.request()
        if interval:
            time.sleep(interval)
    return client.run


def check_path(host: str, port: int, path: str, requests: int = 10, server_name: str | None = None,
               context: ssl.SSLContext | None = None) -> SessionRun:
    """Without the test page: `path` through nginx, `requests` times (bounded); an answer below
    400 passes. Nothing about sessions can be judged from an operator's page."""
    run = SessionRun(path=path)
    for _ in range(requests):
        run.requests += 1
        conn = connection(host, port, 10, server_name, context)
        try:
            conn.request("GET", path, headers={"Host": server_name} if server_name else {})
            resp = conn.getresponse()
            resp.read()
        except (OSError, http.client.HTTPException) as e:
            run.failed += 1
            run.errors.append(f"request {run.requests}: {e}")
            continue
        finally:
            conn.close()
        if resp.status >= 400:
            run.failed += 1
            run.errors.append(f"request {run.requests}: HTTP {resp.status}")
    return run
