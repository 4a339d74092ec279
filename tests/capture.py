"""A packet capture on a lab bridge, for tests that must see what crosses the wire (no tcpdump
needed): an AF_PACKET socket on the bridge in promiscuous mode (a bridge passes the frames it
forwards between its ports up to such a socket), TCP payloads of one port collected for a bounded
time in a thread. Root only; used on the project's own lab bridges only."""

from __future__ import annotations

import socket
import struct
import threading
import time

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1


def tcp_payload(frame: bytes, port: int) -> bytes:
    """The TCP payload of an Ethernet/IPv4 frame to or from `port`, else b""."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return b""
    ip = frame[14:]
    ihl = (ip[0] & 0x0F) * 4
    if ip[9] != 6 or len(ip) < ihl + 20:
        return b""
    total = struct.unpack("!H", ip[2:4])[0]
    tcp = ip[ihl:total]
    sport, dport = struct.unpack("!HH", tcp[:4])
    if port not in (sport, dport):
        return b""
    return tcp[(tcp[12] >> 4) * 4:]


class Capture:
    """`with Capture("tcs-lab", 4000) as c: ...` then `c.data`: every payload seen, in order
    (at most `seconds` long, and at most `limit` bytes)."""

    def __init__(self, interface: str, port: int, seconds: float = 60, limit: int = 64 << 20):
        self.interface, self.port, self.seconds, self.limit = interface, port, seconds, limit
        self.data = b""
        self.frames = 0
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(ETH_P_ALL))
        self._sock.bind((interface, 0))
        mreq = struct.pack("iHH8s", socket.if_nametoindex(interface), PACKET_MR_PROMISC, 0, b"")
        self._sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        self._sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.seconds
        chunks, size = [], 0
        while not self._stop.is_set() and time.monotonic() < deadline and size < self.limit:
            try:
                frame = self._sock.recv(65535)
            except socket.timeout:
                continue
            payload = tcp_payload(frame, self.port)
            if payload:
                self.frames += 1
                chunks.append(payload)
                size += len(payload)
        self.data = b"".join(chunks)

    def __enter__(self) -> "Capture":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()
