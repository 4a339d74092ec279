"""The lab capture's frame parsing (tests/capture.py), on frames built here by the layouts of
RFC 791 (IPv4) and RFC 793 (TCP): what the bridge capture test relies on to find payloads."""

from __future__ import annotations

import struct

from capture import tcp_payload


def frame(sport: int, dport: int, payload: bytes, proto: int = 6, ihl: int = 5, doff: int = 5,
          ethertype: bytes = b"\x08\x00") -> bytes:
    options = b"\x01" * ((doff - 5) * 4)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, doff << 4, 0x18, 65535, 0, 0) + options + payload
    ip_opts = b"\x01" * ((ihl - 5) * 4)
    ip = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + len(tcp), 0, 0, 64, proto, 0,
                     bytes([10, 153, 33, 11]), bytes([10, 153, 33, 12])) + ip_opts
    padding = b"\x00" * max(0, 60 - 14 - len(ip) - len(tcp))  # Ethernet's minimum frame
    return b"\xaa" * 6 + b"\xbb" * 6 + ethertype + ip + tcp + padding


def test_the_payload_of_either_direction_is_found():
    assert tcp_payload(frame(40000, 4000, b"session"), 4000) == b"session"
    assert tcp_payload(frame(4000, 40000, b"reply"), 4000) == b"reply"


def test_options_and_padding_are_skipped():
    assert tcp_payload(frame(1, 4000, b"x", ihl=6, doff=8), 4000) == b"x"
    assert tcp_payload(frame(1, 4000, b""), 4000) == b""  # an ACK, padded to 60 bytes


def test_other_ports_protocols_and_ethertypes_are_not():
    assert tcp_payload(frame(1, 8080, b"http"), 4000) == b""
    assert tcp_payload(frame(1, 4000, b"udp", proto=17), 4000) == b""
    assert tcp_payload(frame(1, 4000, b"v6", ethertype=b"\x86\xdd"), 4000) == b""
    assert tcp_payload(b"short", 4000) == b""
