"""A certificate authority the tests make themselves (real X.509, made with the cryptography
package): a root, an intermediate, and server certificates with chosen names and dates."""

from __future__ import annotations

import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NOW = datetime.datetime.now(datetime.timezone.utc)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key, password: bytes | None = None) -> bytes:
    enc = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


class CA:
    def __init__(self, name: str = "tcsession test root"):
        self.root_key = _key()
        self.root = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
                     .public_key(self.root_key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(NOW - datetime.timedelta(days=1)).not_valid_after(NOW + datetime.timedelta(days=3650))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.root_key, hashes.SHA256()))
        self.mid_key = _key()
        self.mid = (x509.CertificateBuilder().subject_name(_name(name + " intermediate")).issuer_name(self.root.subject)
                    .public_key(self.mid_key.public_key()).serial_number(x509.random_serial_number())
                    .not_valid_before(NOW - datetime.timedelta(days=1)).not_valid_after(NOW + datetime.timedelta(days=3650))
                    .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                    .sign(self.root_key, hashes.SHA256()))

    @property
    def root_pem(self) -> bytes:
        return pem(self.root)

    def issue(self, *names: str, days: int = 90, start_days: int = -1) -> tuple[bytes, bytes]:
        """(full chain PEM: server then intermediate, key PEM) for `names` (DNS names or IPs)."""
        key = _key()
        alt = [x509.IPAddress(ipaddress.ip_address(n)) if n.replace(".", "").isdigit() else x509.DNSName(n)
               for n in names]
        cert = (x509.CertificateBuilder().subject_name(_name(names[0])).issuer_name(self.mid.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(NOW + datetime.timedelta(days=start_days))
                .not_valid_after(NOW + datetime.timedelta(days=start_days + days))
                .add_extension(x509.SubjectAlternativeName(alt), critical=False)
                .sign(self.mid_key, hashes.SHA256()))
        return pem(cert) + pem(self.mid), key_pem(key)
