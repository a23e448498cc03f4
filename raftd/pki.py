"""Certificates for mutual TLS between raftd nodes and from raftctl: a small private CA.

Every connection in a TLS cluster is authenticated both ways by certificates signed by one CA
that belongs to the cluster; who a peer is comes from its certificate, not from its address.
The daemon relies on the conventions below, so they are part of this module's interface.

Keys and signatures
    EC P-256 keys, ECDSA with SHA-256. Keys are PEM, PKCS8, unencrypted (a daemon must start
    unattended); the file mode is what protects them.

The CA (``ca.crt``, ``ca.key``)
    Self-signed; subject CN="<cluster> CA", O=<cluster>. BasicConstraints(ca=True,
    path_length=0), critical: it signs leaf certificates only. KeyUsage keyCertSign+cRLSign,
    critical. SubjectKeyIdentifier. Valid 10 years by default.

Leaf certificates (``node-<ID>.crt``/``.key`` and ``client-<NAME>.crt``/``.key``)
    Subject CN=<node id or client name>, OU=<role>, O=<cluster> (copied from the CA subject).
    The role is "node" for a raftd server, "admin" for an operator allowed to change the
    cluster (membership, snapshots, ...) and "client" for a plain key-value client. A peer's
    identity is therefore (CN, OU) of its verified certificate.
    BasicConstraints ca=False (critical); KeyUsage digitalSignature+keyAgreement (critical);
    SubjectKeyIdentifier; AuthorityKeyIdentifier. Node certificates carry ExtendedKeyUsage
    serverAuth+clientAuth (a node both accepts and opens connections) and a
    SubjectAlternativeName with each host as an IPAddress if it parses as one, else a DNSName.
    Client certificates carry ExtendedKeyUsage clientAuth and no SAN.
    Random 159-bit serial numbers. notBefore is now - 5 minutes, so a peer whose clock is a
    little behind does not reject a certificate issued a moment ago. A leaf never outlives its
    CA: notAfter is capped at the CA's notAfter.

Files
    One directory holds the CA and everything it issued. It is created with mode 0700. Keys are
    written with mode 0600 from the moment the file exists (never readable by others, even
    briefly) and certificates with 0644; both atomically (temp file in the same directory,
    fsync, rename), so a crash never leaves half a key behind.

Ids and names are 1-64 characters from [A-Za-z0-9._-]: they go into file names and subjects.
"""
from __future__ import annotations

import ipaddress
import os
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from raftd.tls import EXPIRY_WARNING_DAYS, ROLE_ADMIN, ROLE_CLIENT, ROLES  # noqa: F401 - re-exported

CLIENT_ROLES = (ROLE_ADMIN, ROLE_CLIENT)
CLOCK_SKEW = timedelta(minutes=5)

_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_DNS = re.compile(r"(\*\.)?[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?"
                  r"(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?")


class PKIError(Exception):
    """Something about the certificates or their files is wrong; the message is one readable
    line that names the file or the value at fault."""


class PKIInputError(PKIError, ValueError):
    """A bad argument (name, host, role, validity) rather than a problem with the files, so a
    CLI can report it as a usage error."""


@dataclass(frozen=True)
class CertPaths:
    cert: Path
    key: Path
    ca: Path


# -- file layout ---------------------------------------------------------------------------

def ca_paths(dir: str | os.PathLike) -> CertPaths:
    d = Path(dir)
    return CertPaths(d / "ca.crt", d / "ca.key", d / "ca.crt")


def node_paths(dir: str | os.PathLike, node_id: str) -> CertPaths:
    """Where a node's certificate and key live: the daemon finds its own by its id."""
    d = Path(dir)
    return CertPaths(d / f"node-{node_id}.crt", d / f"node-{node_id}.key", d / "ca.crt")


def client_paths(dir: str | os.PathLike, name: str) -> CertPaths:
    d = Path(dir)
    return CertPaths(d / f"client-{name}.crt", d / f"client-{name}.key", d / "ca.crt")


# -- validation ----------------------------------------------------------------------------

def check_name(name: str, what: str = "name") -> str:
    """Ids and names end up in file names and certificate subjects: keep them plain."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise PKIInputError(f"bad {what} {name!r}: use 1-64 characters from A-Z a-z 0-9 . _ -")
    return name


def check_host(host: str) -> x509.GeneralName:
    """An IP address becomes an IPAddress SAN, anything else must be a DNS name (TLS clients
    match IP literals only against IPAddress entries)."""
    h = host.strip() if isinstance(host, str) else ""
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    try:
        return x509.IPAddress(ipaddress.ip_address(h))
    except ValueError:
        pass
    if not h or len(h) > 253 or not h.isascii() or not _DNS.fullmatch(h):
        hint = " (give the host without a port)" if ":" in h else ""
        raise PKIInputError(f"bad host {host!r}: not an IP address or DNS name{hint}")
    return x509.DNSName(h.rstrip(".").lower())


def _check_cluster(cluster: str) -> str:
    # the CA's CN is "<cluster> CA", and a CN is at most 64 characters
    if not isinstance(cluster, str) or not re.fullmatch(r"[A-Za-z0-9._-]{1,61}", cluster):
        raise PKIInputError(f"bad cluster name {cluster!r}: use 1-61 characters from "
                            "A-Z a-z 0-9 . _ -")
    return cluster


def _validity(days: float, not_after: datetime | None) -> tuple[datetime, datetime]:
    now = datetime.now(timezone.utc)
    if not_after is not None:  # an explicit end (tests make expired or short-lived certs)
        end = not_after if not_after.tzinfo else not_after.replace(tzinfo=timezone.utc)
        end = end.astimezone(timezone.utc)
    else:
        try:
            ok = float(days) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise PKIInputError(f"bad validity {days!r}: days must be a number above 0")
        end = now + timedelta(days=float(days))
    start = min(now - CLOCK_SKEW, end - timedelta(days=1))
    return start.replace(microsecond=0), end.replace(microsecond=0)


# -- files ---------------------------------------------------------------------------------

def _write(path: Path, data: bytes, mode: int) -> None:
    """Write atomically with ``mode`` from creation: the temp file is opened O_EXCL with its
    final mode, so a key is never readable by others, not even for an instant."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
    except OSError as e:
        raise PKIError(f"{path}: cannot write ({e.strerror})") from None
    try:
        try:
            os.fchmod(fd, mode)  # the umask may have taken bits off a certificate's 0644
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise PKIError(f"{path}: cannot write ({e.strerror})") from None
    _fsync_dir(path.parent)


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise PKIError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise PKIError(f"{path}: is a directory, not {what}") from None
    except OSError as e:
        raise PKIError(f"{path}: cannot read ({e.strerror})") from None


def _make_dir(d: Path) -> None:
    """The certs directory holds private keys: only its owner may list or enter it."""
    if d.exists():
        if not d.is_dir():
            raise PKIError(f"{d}: exists and is not a directory")
        return
    try:
        d.mkdir(mode=0o700, parents=True)
        os.chmod(d, 0o700)
    except OSError as e:
        raise PKIError(f"{d}: cannot create the directory ({e.strerror})") from None


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _refuse_overwrite(paths: CertPaths, force: bool) -> None:
    if force:
        return
    for p in (paths.cert, paths.key):
        if p.exists():
            raise PKIError(f"{p} already exists (use --force to replace it)")


# -- the CA --------------------------------------------------------------------------------

def init_ca(dir: str | os.PathLike, cluster: str = "raftd", days: float = 3650,
            force: bool = False, not_after: datetime | None = None) -> CertPaths:
    """Create a new CA in ``dir``. Refuses to replace an existing one unless ``force``: a new
    CA key makes every certificate issued so far worthless."""
    _check_cluster(cluster)
    start, end = _validity(days, not_after)
    paths = ca_paths(dir)
    if not force:
        for p in (paths.key, paths.cert):
            if p.exists():
                raise PKIError(f"{p} already exists: {Path(dir)} already holds a CA "
                               "(use --force to replace it and invalidate what it issued)")
    _make_dir(Path(dir))
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{cluster} CA"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256()))
    _write(paths.key, _key_pem(key), 0o600)
    _write(paths.cert, _cert_pem(cert), 0o644)
    return paths


@dataclass(frozen=True)
class _CA:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _load_ca(dir: str | os.PathLike) -> _CA:
    paths = ca_paths(dir)
    hint = f"no CA here; run `raftctl certs init {dir}` first"
    if not paths.key.exists():
        raise PKIError(f"{paths.key}: {hint}")
    if not paths.cert.exists():
        raise PKIError(f"{paths.cert}: {hint}")
    try:
        key = serialization.load_pem_private_key(_read(paths.key, "a key"), password=None)
    except TypeError:
        raise PKIError(f"{paths.key}: the CA key is encrypted; raftd needs it unencrypted "
                       "(PKCS8 PEM)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise PKIError(f"{paths.key}: not a PEM private key") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise PKIError(f"{paths.key}: unsupported key type {type(key).__name__} "
                       "(EC or RSA expected)")
    cert = _load_cert(paths.cert)
    if cert.public_key() != key.public_key():
        raise PKIError(f"{paths.key}: does not belong to the certificate {paths.cert}")
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is None or not bc.ca:
        raise PKIError(f"{paths.cert}: not a CA certificate")
    if cert.not_valid_after_utc <= datetime.now(timezone.utc):
        raise PKIError(f"{paths.cert}: the CA expired on {cert.not_valid_after_utc:%Y-%m-%d}; "
                       "make a new one with `raftctl certs init --force` and reissue")
    return _CA(cert, key)


def _load_cert(path: Path) -> x509.Certificate:
    data = _read(path, "a certificate")
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise PKIError(f"{path}: not a PEM certificate") from None


# -- leaf certificates ---------------------------------------------------------------------

def _issue(dir: str | os.PathLike, paths: CertPaths, name: str, role: str,
           sans: list[x509.GeneralName], eku: list, days: float,
           not_after: datetime | None, force: bool) -> CertPaths:
    start, end = _validity(days, not_after)
    ca = _load_ca(dir)
    _refuse_overwrite(paths, force)
    end = min(end, ca.cert.not_valid_after_utc)
    start = min(start, end - timedelta(seconds=1))
    attrs: list[x509.NameAttribute] = [
        x509.NameAttribute(NameOID.COMMON_NAME, name),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role)]
    attrs += ca.cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[:1]
    key = ec.generate_private_key(ec.SECP256R1())
    try:
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
            ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key())
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name(attrs)).issuer_name(ca.cert.subject)
         .public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(start).not_valid_after(end)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                      key_encipherment=False, data_encipherment=False,
                                      key_agreement=True, key_cert_sign=False, crl_sign=False,
                                      encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                        critical=False)
         .add_extension(aki, critical=False))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = b.sign(ca.key, hashes.SHA256())
    _write(paths.key, _key_pem(key), 0o600)
    _write(paths.cert, _cert_pem(cert), 0o644)
    return paths


def issue_node(dir: str | os.PathLike, node_id: str, hosts: list[str], days: float = 365,
               force: bool = False, not_after: datetime | None = None) -> CertPaths:
    """Issue node-<ID>.crt/.key: a raftd server's identity, valid as a TLS server for each of
    ``hosts`` (the addresses peers and clients dial) and as a TLS client to its peers."""
    check_name(node_id, "node id")
    if isinstance(hosts, str):
        hosts = [hosts]
    if not hosts:
        raise PKIInputError(f"node {node_id}: give at least one host (IP address or DNS name "
                            "that peers and clients dial)")
    sans: list[x509.GeneralName] = []
    for h in hosts:
        g = check_host(h)
        if g not in sans:
            sans.append(g)
    return _issue(dir, node_paths(dir, node_id), node_id, "node", sans,
                  [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
                  days, not_after, force)


def issue_client(dir: str | os.PathLike, name: str, role: str, days: float = 365,
                 force: bool = False, not_after: datetime | None = None) -> CertPaths:
    """Issue client-<NAME>.crt/.key for raftctl or an application; ``role`` (admin or client)
    goes into the OU, which is what the cluster authorizes by."""
    check_name(name, "client name")
    if role not in CLIENT_ROLES:
        raise PKIInputError(f"bad role {role!r}: must be admin or client")
    return _issue(dir, client_paths(dir, name), name, role, [],
                  [ExtendedKeyUsageOID.CLIENT_AUTH], days, not_after, force)


# -- inspection ----------------------------------------------------------------------------

def name_attribute(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    found = name.get_attributes_for_oid(oid)
    if not found:
        return None
    v = found[0].value
    return v.decode(errors="replace") if isinstance(v, bytes) else v


def describe(path: str | os.PathLike) -> dict:
    """What an operator needs to know about a certificate file: who, which role and cluster,
    who signed it, for which hosts, and how long it has left."""
    p = Path(path)
    cert = _load_cert(p)
    now = datetime.now(timezone.utc)
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        hosts = [str(g.value) for g in san if isinstance(g, (x509.DNSName, x509.IPAddress))]
    except x509.ExtensionNotFound:
        hosts = []
    except ValueError:  # a malformed extension in a foreign certificate
        hosts = []
    not_after = cert.not_valid_after_utc
    return {
        "path": str(p),
        "subject": cert.subject.rfc4514_string(),
        "name": name_attribute(cert.subject, NameOID.COMMON_NAME),
        "role": name_attribute(cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME),
        "cluster": name_attribute(cert.subject, NameOID.ORGANIZATION_NAME),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": not_after.isoformat(),
        "days_left": round((not_after - now).total_seconds() / 86400, 1),
        "is_ca": bool(is_ca),
        "hosts": hosts,
    }
