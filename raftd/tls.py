"""Mutual TLS for raftd: SSL contexts, who is on the other end, and what they may do.

Identities come from certificates made by ``raftctl certs`` (see raftd/pki.py):

    CN = node id or client name     OU = role: node | admin | client     O = cluster

* A peer connection (HELLO) is accepted only from a ``node`` certificate issued by the cluster
  CA whose CN is the id in the HELLO; membership is checked per message by the server
  (RaftServer._from_member_or_allowed).
* ``client`` certificates may read and write keys; ``admin`` (and ``node``) certificates may
  also change membership, take snapshots, transfer leadership and read status.

The server does the TLS handshake itself (``StreamWriter.start_tls``) rather than handing an
SSL context to ``start_server``: a plaintext or wrongly signed peer then fails in our code, with
one clear log line and a counter, and every new connection uses the context current at that
moment, which is how SIGHUP reloads certificates without a restart.

``cryptography`` is imported only where certificates are parsed (a node's NodeTLS): the client
library and raftctl import this module on every start and need only the ``ssl`` parts.
"""
from __future__ import annotations

import datetime as _dt
import os
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography import x509

ROLE_NODE, ROLE_ADMIN, ROLE_CLIENT = "node", "admin", "client"
ROLES = (ROLE_NODE, ROLE_ADMIN, ROLE_CLIENT)
CLIENT_OPS = frozenset({"put", "get", "delete", "cas", "list", "open_session"})  # the `client` role
EXPIRY_WARNING_DAYS = 30
ENV = {"ca": "RAFTCTL_CACERT", "cert": "RAFTCTL_CERT", "key": "RAFTCTL_KEY"}


class TLSConfigError(Exception):
    """Certificate files missing, unreadable or not matching (one line for the operator)."""


@dataclass(frozen=True)
class TLSFiles:
    ca: str  # the cluster CA: signs node certificates (and client ones unless client_ca)
    cert: str | None = None
    key: str | None = None
    client_ca: str | None = None  # optional second CA for client certificates


@dataclass(frozen=True)
class Identity:
    name: str | None
    role: str | None
    cluster_ca: bool  # issued by the cluster CA (not only by the client CA)

    def describe(self) -> str:
        return f"{self.name or '?'} (role {self.role or 'none'})"


def may(identity: Identity | None, op: str) -> bool:
    """May this identity run client operation ``op``?  None = plaintext, no roles."""
    if identity is None:
        return True
    if identity.role in (ROLE_ADMIN, ROLE_NODE):
        return True
    return identity.role == ROLE_CLIENT and op in CLIENT_OPS


def files_from_env(environ=os.environ) -> TLSFiles | None:
    """The client library's TLS settings: RAFTCTL_CACERT, RAFTCTL_CERT, RAFTCTL_KEY."""
    ca = environ.get(ENV["ca"])
    if not ca:
        return None
    return TLSFiles(ca, environ.get(ENV["cert"]) or None, environ.get(ENV["key"]) or None)


def _load_certs(path: str, what: str) -> list[x509.Certificate]:
    """Every certificate in a PEM file (a CA file may hold two CAs while one is rotated)."""
    from cryptography import x509  # noqa: PLC0415 - see the module docstring
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise TLSConfigError(f"{what} {path}: cannot read: {e.strerror or e}") from None
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise TLSConfigError(f"{what} {path}: not a PEM certificate ({e})") from None
    if not certs:
        raise TLSConfigError(f"{what} {path}: no certificate in it")
    return certs


def _subject(cert: x509.Certificate) -> tuple[str | None, str | None]:
    """(CN, OU): the name and the role (raftd/pki.py's conventions)."""
    from cryptography.x509.oid import NameOID  # noqa: PLC0415 - lazy import: only this path needs it (start-up time)

    from raftd.pki import name_attribute  # noqa: PLC0415 - lazy import: only this path needs it (start-up time)
    return (name_attribute(cert.subject, NameOID.COMMON_NAME),
            name_attribute(cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME))


def _key_id(cert: x509.Certificate, authority: bool) -> bytes | None:
    """The authority (or, with ``authority`` False, the subject) key identifier."""
    from cryptography import x509  # noqa: PLC0415 - lazy import: only this path needs it (start-up time)
    from cryptography.x509.oid import ExtensionOID  # noqa: PLC0415 - lazy import: only this path needs it (start-up time)
    oid = ExtensionOID.AUTHORITY_KEY_IDENTIFIER if authority \
        else ExtensionOID.SUBJECT_KEY_IDENTIFIER
    try:
        ext = cert.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return None
    if isinstance(ext, x509.AuthorityKeyIdentifier):
        return ext.key_identifier
    return ext.digest if isinstance(ext, x509.SubjectKeyIdentifier) else None


def _days_left(cert: x509.Certificate) -> float:
    left = cert.not_valid_after_utc - _dt.datetime.now(_dt.timezone.utc)
    return round(left.total_seconds() / 86400, 1)


def _common(ctx: ssl.SSLContext, files: TLSFiles, what: str) -> None:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    for path, label in ((files.ca, "ca"), (files.client_ca, "client_ca")):
        if path:
            try:
                ctx.load_verify_locations(cafile=path)
            except (OSError, ssl.SSLError) as e:
                raise TLSConfigError(f"{label} {path}: cannot load: {e}") from None
    if files.cert or files.key:
        if not (files.cert and files.key):
            raise TLSConfigError(f"{what}: a certificate needs both cert and key")
        try:
            ctx.load_cert_chain(files.cert, files.key)
        except FileNotFoundError as e:
            # ssl's error carries no filename: name the missing one ourselves.
            missing = e.filename or next(
                (p for p in (files.cert, files.key) if not os.path.exists(p)), files.cert)
            raise TLSConfigError(f"{what}: {missing}: no such file") from None
        except (OSError, ssl.SSLError) as e:
            raise TLSConfigError(f"{what}: cert {files.cert} / key {files.key}: cannot load "
                                 f"(does the key match the certificate?): {e}") from None


def client_context(files: TLSFiles) -> ssl.SSLContext:
    """For raftctl, the client library and a node's outgoing peer links.  Host names are not
    checked (nodes move between addresses); the peer's certificate name is checked instead
    where it matters (peer links)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    _common(ctx, files, "client certificate")
    return ctx


class NodeTLS:
    """A node's TLS state: both contexts, the CA's key id, the certificate's expiry.
    ``reload()`` builds everything anew and swaps only when all of it loaded."""

    def __init__(self, files: TLSFiles):
        self.files = files
        self.load()

    def load(self) -> None:
        f = self.files
        if not (f.cert and f.key):
            raise TLSConfigError("tls: cert and key are required")
        cas = _load_certs(f.ca, "tls.ca")
        cert = _load_certs(f.cert, "tls.cert")[0]
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        _common(server, f, "tls")
        client = client_context(f)
        if not any(self._issued_by(cert, ca) for ca in cas):
            raise TLSConfigError(f"tls.cert {f.cert} was not issued by the CA in {f.ca}")
        # Everything loaded: swap (a failed reload leaves the running state untouched).
        self.server_context, self.client_context = server, client
        self._cas, self.cert = cas, cert
        self.name, self.role = _subject(cert)

    @staticmethod
    def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
        """Name and key id match (the signature itself was checked by the TLS handshake)."""
        return cert.issuer == ca.subject and \
            _key_id(cert, True) in (_key_id(ca, False), None)

    def identity(self, ssl_object) -> Identity:
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            return Identity(None, None, False)
        from cryptography import x509  # noqa: PLC0415 - lazy import: only this path needs it (start-up time)
        cert = x509.load_der_x509_certificate(der)
        from_cluster_ca = any(self._issued_by(cert, ca) for ca in self._cas)
        return Identity(*_subject(cert), from_cluster_ca)

    def info(self) -> dict:
        days = _days_left(self.cert)
        soonest_ca = min(self._cas, key=lambda c: c.not_valid_after_utc)
        ca_days = _days_left(soonest_ca)
        warning = None
        if days < EXPIRY_WARNING_DAYS:
            warning = (f"certificate {self.files.cert} expires in {days} days "
                       f"({self.cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC)") if days > 0 \
                else f"certificate {self.files.cert} has EXPIRED"
        elif ca_days < EXPIRY_WARNING_DAYS:
            warning = f"CA certificate {self.files.ca} expires in {ca_days} days"
        return {"enabled": True, "name": self.name, "role": self.role,
                "cert": self.files.cert, "not_after": self.cert.not_valid_after_utc.isoformat(),
                "days_left": days, "ca_not_after": soonest_ca.not_valid_after_utc.isoformat(),
                "ca_days_left": ca_days, "warning": warning}


def handshake_error(e: BaseException) -> str:
    """A readable reason for a failed TLS handshake."""
    reason = getattr(e, "reason", None) or ""
    text = str(e)
    if reason in ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNKNOWN_PROTOCOL",
                  "RECORD_LAYER_FAILURE") \
            or "wrong version number" in text:
        return "not TLS (a plaintext client or peer?)"
    if reason in ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "TLSV13_ALERT_CERTIFICATE_REQUIRED"):
        return "no client certificate presented"
    if reason in ("CERTIFICATE_VERIFY_FAILED", "TLSV1_ALERT_UNKNOWN_CA",
                  "SSLV3_ALERT_BAD_CERTIFICATE"):
        why = getattr(e, "verify_message", None) or reason
        return f"certificate not signed by this cluster's CA ({why})"
    if isinstance(e, TimeoutError):
        return "handshake timed out"
    return text or type(e).__name__
