"""[tls]: the certificate (full chain) and key nginx serves, read and checked on this machine
before any host is changed: the key matches the certificate, the certificate covers
`server_name`, it is valid now, and the chain in the file is in order (each certificate signed by
the next). A failure is one line naming the file and the fix; nothing is sent anywhere.

The key's bytes go to the nginx host only (root-only, 0600): never into a diff, a log line, the
history or JSON (tcsession.steps masks them).
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from tcsession.errors import TcsessionError

WARN_DAYS = 21  # status warns when the certificate has fewer days left


def read_pair(inv) -> tuple[bytes, bytes]:
    """The [tls] certificate and key files' bytes, checked (`check_pair`)."""
    t = inv.tls
    out = []
    for what, path in (("certificate", t.certificate), ("key", t.key)):
        try:
            out.append(Path(path).read_bytes())
        except OSError as e:
            raise TcsessionError(f"{inv.path}: [tls] {what} {path}: cannot read it ({e.strerror}); fix its "
                                 "permissions or the path (tcsession changed nothing)") from None
    cert, key = out
    check_pair(cert, key, t.server_name, f"{inv.path}: [tls]", str(t.certificate), str(t.key))
    return cert, key


def load_chain(data: bytes, where: str) -> list:
    from cryptography import x509

    try:
        chain = x509.load_pem_x509_certificates(data)
    except ValueError:
        chain = []
    if not chain:
        raise TcsessionError(f"{where}: no PEM certificate in it (BEGIN CERTIFICATE); give the full chain file "
                             "(the server's certificate first, then the intermediates)")
    return chain


def check_pair(cert: bytes, key: bytes, server_name: str, label: str, cert_file: str, key_file: str,
               now: datetime.datetime | None = None) -> None:
    """TcsessionError (one line) for the first problem: a key that is not a private key or does
    not match, a certificate that does not cover `server_name`, not valid now, or a chain out of
    order."""
    from cryptography.hazmat.primitives import serialization

    now = now or datetime.datetime.now(datetime.timezone.utc)
    chain = load_chain(cert, f"{label} certificate {cert_file}")
    if b"BEGIN CERTIFICATE" in key and b"PRIVATE KEY" not in key:
        raise TcsessionError(f"{label} key {key_file} is a certificate, not a private key; give the private key file")
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except TypeError:
        raise TcsessionError(f"{label} key {key_file} is encrypted; nginx would ask for its passphrase at every "
                             f"start: give it unencrypted (openssl pkey -in {key_file} -out NEW), root-only") from None
    except ValueError:
        raise TcsessionError(f"{label} key {key_file} is not a PEM private key; give the key the certificate "
                             "was issued for") from None
    leaf = chain[0]
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if private.public_key().public_bytes(der, pub) != leaf.public_key().public_bytes(der, pub):
        raise TcsessionError(f"{label} key {key_file} does not match the certificate {cert_file} (its public key "
                             "differs): give the key the certificate was issued for, or the certificate of this key")
    start, end = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    if now < start:
        raise TcsessionError(f"{label} certificate {cert_file} is not valid before {start:%Y-%m-%d %H:%M} UTC; "
                             "check this machine's clock or the certificate")
    if now >= end:
        raise TcsessionError(f"{label} certificate {cert_file} expired on {end:%Y-%m-%d %H:%M} UTC; renew it")
    names = covered_names(leaf)
    if not any(name_matches(pattern, server_name) for pattern in names):
        raise TcsessionError(f"{label} certificate {cert_file} does not cover server_name {server_name!r} (it names "
                             f"{', '.join(names) or 'nothing'}); give the certificate for that name, or fix server_name")
    for i in range(len(chain) - 1):
        if chain[i].issuer != chain[i + 1].subject:
            raise TcsessionError(f"{label} certificate {cert_file}: certificate {i + 2} in the file is not the issuer "
                                 f"of certificate {i + 1}; put the chain in order (server first, then each issuer)")
        try:
            chain[i].verify_directly_issued_by(chain[i + 1])
        except Exception:  # noqa: BLE001 (ValueError, InvalidSignature, TypeError by key type)
            raise TcsessionError(f"{label} certificate {cert_file}: certificate {i + 1} is not signed by certificate "
                                 f"{i + 2}; put the right intermediate after it") from None


def covered_names(cert) -> list[str]:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return [*san.get_values_for_type(x509.DNSName),
                *(str(a) for a in san.get_values_for_type(x509.IPAddress))]
    except x509.ExtensionNotFound:
        return [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def name_matches(pattern: str, name: str) -> bool:
    """RFC 6125: exact (case-insensitive), or one wildcard label on the left matching one label."""
    pattern, name = pattern.lower().rstrip("."), name.lower().rstrip(".")
    try:
        return ipaddress.ip_address(pattern) == ipaddress.ip_address(name)
    except ValueError:
        pass
    if pattern == name:
        return True
    if pattern.startswith("*.") and "." in name:
        return name.split(".", 1)[1] == pattern[2:] and name.split(".", 1)[0] != ""
    return False


def days_left(cert: bytes, now: datetime.datetime | None = None) -> int:
    now = now or datetime.datetime.now(datetime.timezone.utc)
    leaf = load_chain(cert, "certificate")[0]
    return (leaf.not_valid_after_utc - now).days
