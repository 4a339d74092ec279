"""A bounded client load through nginx: N sessions, a total request rate, a fixed duration.

Used by the lab tests and by anyone who wants to watch a rolling change: every request is
checked (answered, and the session's counter is the previous plus one).
"""

from __future__ import annotations

import dataclasses
import threading
import time

from tcsession.client import SessionClient


@dataclasses.dataclass
class LoadResult:
    sessions: int
    requests: int
    failed: int
    lost_updates: int
    seconds: float
    errors: list

    def line(self) -> str:
        return (f"{self.sessions} sessions, {self.requests} requests in {self.seconds:.1f} s: "
                f"{self.failed} failed, {self.lost_updates} lost updates")


class Load:
    """Start, do something, stop: `with Load(host) as load: ...; load.result`."""

    def __init__(self, host: str, port: int = 80, sessions: int = 5, rate: float = 20.0,
                 max_seconds: float = 300.0, mode: str | None = "delta", path: str = "/test.jsp",
                 server_name: str | None = None, context=None):
        # mode: the session id format ("delta", "msm"), so that a failed-over msm session
        # (renamed by MSM) counts as the same session (tcsession.client.judge_step). path: any page
        # that answers the test page's `node=... session=... count=...` line (an application's too)
        # server_name: over HTTPS, verified for that name (tcsession.client.SessionClient)
        self.clients = [SessionClient(host, port, path=path, timeout=10, mode=mode, server_name=server_name,
                                      context=context) for _ in range(sessions)]
        self.interval = sessions / rate  # each session's pause between its requests
        self.max_seconds = max_seconds  # bounded even if nobody stops it
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(c,), daemon=True) for c in self.clients]
        self.result: LoadResult | None = None

    def _loop(self, client: SessionClient) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            t = time.monotonic()
            client.request()
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - t)))

    def __enter__(self) -> Load:
        self._started = time.monotonic()
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        runs = [c.run for c in self.clients]
        self.result = LoadResult(len(runs), sum(r.requests for r in runs), sum(r.failed for r in runs),
                                 sum(r.lost_updates for r in runs), time.monotonic() - self._started,
                                 [e for r in runs for e in r.errors][:10])
