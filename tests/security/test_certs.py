"""raftctl certs init|issue|inspect and raftd.pki: files, modes, certificate contents, errors,
and a real mutual-TLS handshake with the issued certificates."""
from __future__ import annotations

import json
import os
import socket
import ssl
import stat
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import typer
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from typer.testing import CliRunner

from raftctl.commands import certs
from raftd import pki

# the sub-app mounted the way raftctl.main mounts its groups
root = typer.Typer(pretty_exceptions_enable=False, rich_markup_mode=None)


@root.callback()
def _root(ctx: typer.Context) -> None:
    ctx.obj = {}


root.add_typer(certs.app, name="certs")


def cli(*args, check: int | None = None, env: dict | None = None):
    r = CliRunner().invoke(root, ["certs", *map(str, args)], env=env)
    if check is not None:
        assert r.exit_code == check, (r.exit_code, r.stdout, r.stderr)
    return r


def mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def load(p: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(p.read_bytes())


@pytest.fixture
def ca(tmp_path) -> Path:
    d = tmp_path / "certs"
    cli("init", d, "--cluster", "prod", check=0)
    return d


# -- files and modes -----------------------------------------------------------------------

def test_init_layout_modes_and_json(tmp_path):
    d = tmp_path / "a" / "certs"
    out = json.loads(cli("init", d, "--cluster", "prod", "-o", "json", check=0).stdout)
    assert out["ca"] == str(d / "ca.crt") and out["key"] == str(d / "ca.key")
    assert out["dir"] == str(d)
    assert mode(d) == 0o700
    assert mode(d / "ca.key") == 0o600 and mode(d / "ca.crt") == 0o644
    assert sorted(p.name for p in d.iterdir()) == ["ca.crt", "ca.key"]  # no temp files left
    assert b"BEGIN PRIVATE KEY" in (d / "ca.key").read_bytes()  # PKCS8, unencrypted


def test_issue_modes_and_layout(ca):
    cli("issue", "--dir", ca, "--node", "n1", "--host", "127.0.0.1", check=0)
    cli("issue", "--dir", ca, "--client", "alice", "--role", "admin", check=0)
    assert sorted(p.name for p in ca.iterdir()) == [
        "ca.crt", "ca.key", "client-alice.crt", "client-alice.key", "node-n1.crt", "node-n1.key"]
    for name in ("node-n1", "client-alice"):
        assert mode(ca / f"{name}.key") == 0o600
        assert mode(ca / f"{name}.crt") == 0o644


@pytest.mark.parametrize("umask", [0o000, 0o077])
def test_modes_do_not_depend_on_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        d = tmp_path / "c"
        pki.init_ca(d)
        pki.issue_node(d, "n1", ["localhost"])
    finally:
        os.umask(old)
    assert mode(d) == 0o700
    assert mode(d / "ca.key") == mode(d / "node-n1.key") == 0o600
    assert mode(d / "ca.crt") == mode(d / "node-n1.crt") == 0o644


def test_keys_are_created_0600_exclusively(tmp_path, monkeypatch):
    """A key file must never exist with a wider mode, not even before a chmod."""
    opened = []
    real_open = os.open

    def spy(path, flags, mode=0o777, *a, **kw):
        opened.append((str(path), flags, mode))
        return real_open(path, flags, mode, *a, **kw)

    monkeypatch.setattr(pki.os, "open", spy)
    d = tmp_path / "c"
    pki.init_ca(d)
    pki.issue_client(d, "bob", "client")
    keys = [o for o in opened if ".key." in o[0] and o[1] & os.O_CREAT]
    assert len(keys) == 2
    for path, flags, m in keys:
        assert m == 0o600, (path, oct(m))
        assert flags & os.O_EXCL and flags & os.O_WRONLY
        assert Path(path).parent == d  # same directory, so the rename is atomic


def test_env_var_and_default_dir(tmp_path, monkeypatch, ca):
    r = cli("issue", "--client", "ops", "--role", "client", "-o", "json", check=0,
            env={"RAFTCTL_CERTS_DIR": str(ca)})
    assert json.loads(r.stdout)["cert"] == str(ca / "client-ops.crt")
    monkeypatch.chdir(ca.parent)  # the fixture's dir is named "certs", the default
    r = cli("issue", "--client", "ops2", "--role", "client", "-o", "json", check=0,
            env={"RAFTCTL_CERTS_DIR": None})
    assert json.loads(r.stdout)["cert"] == str(Path("certs") / "client-ops2.crt")


# -- certificate contents ------------------------------------------------------------------

def test_ca_certificate(ca):
    c = load(ca / "ca.crt")
    assert c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "prod CA"
    assert c.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "prod"
    assert c.issuer == c.subject
    bc = c.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = c.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert not ku.value.digital_signature
    c.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert isinstance(c.public_key(), ec.EllipticCurvePublicKey)
    assert c.public_key().curve.name == "secp256r1"
    assert isinstance(c.signature_hash_algorithm, hashes.SHA256)
    c.verify_directly_issued_by(c)
    d = pki.describe(ca / "ca.crt")
    assert d["is_ca"] is True and d["role"] is None and d["cluster"] == "prod"
    assert 3649.9 <= d["days_left"] <= 3650.0


def test_node_certificate(ca):
    out = json.loads(cli("issue", "--dir", ca, "--node", "n1", "--host", "127.0.0.1",
                         "--host", "::1", "--host", "n1.example.com", "--host", "127.0.0.1",
                         "-o", "json", check=0).stdout)
    assert out["name"] == "n1" and out["role"] == "node"
    assert out["hosts"] == ["127.0.0.1", "::1", "n1.example.com"]  # deduplicated, in order
    assert out["cert"] == str(ca / "node-n1.crt") and out["key"] == str(ca / "node-n1.key")
    assert out["ca"] == str(ca / "ca.crt")
    c, cac = load(ca / "node-n1.crt"), load(ca / "ca.crt")
    c.verify_directly_issued_by(cac)
    subj = {a.oid: a.value for a in c.subject}
    assert subj == {NameOID.COMMON_NAME: "n1", NameOID.ORGANIZATIONAL_UNIT_NAME: "node",
                    NameOID.ORGANIZATION_NAME: "prod"}
    san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert san.get_values_for_type(x509.DNSName) == ["n1.example.com"]
    eku = c.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    bc = c.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.value.ca is False
    assert c.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    aki = c.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = cac.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert c.public_key().curve.name == "secp256r1"
    assert isinstance(c.signature_hash_algorithm, hashes.SHA256)
    now = datetime.now(timezone.utc)
    skew = now - c.not_valid_before_utc
    assert timedelta(minutes=4) < skew < timedelta(minutes=6)  # clock-skew allowance

    d = pki.describe(ca / "node-n1.crt")
    assert set(d) == {"path", "subject", "name", "role", "cluster", "issuer", "serial",
                      "not_before", "not_after", "days_left", "is_ca", "hosts"}
    assert d["name"] == "n1" and d["role"] == "node" and d["cluster"] == "prod"
    assert d["is_ca"] is False and d["hosts"] == out["hosts"]
    assert d["issuer"] == cac.subject.rfc4514_string() and "CN=prod CA" in d["issuer"]
    assert "CN=n1" in d["subject"] and "OU=node" in d["subject"]
    assert int(d["serial"], 16) == c.serial_number
    assert datetime.fromisoformat(d["not_after"]) == c.not_valid_after_utc
    assert datetime.fromisoformat(d["not_before"]).utcoffset() == timedelta(0)
    assert 364.9 <= d["days_left"] <= 365.0


@pytest.mark.parametrize("role", ["admin", "client"])
def test_client_certificate(ca, role):
    out = json.loads(cli("issue", "--dir", ca, "--client", "alice", "--role", role, "-o", "json",
                         check=0).stdout)
    assert out["role"] == role and out["name"] == "alice" and out["hosts"] == []
    c = load(ca / "client-alice.crt")
    c.verify_directly_issued_by(load(ca / "ca.crt"))
    assert c.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == role
    eku = c.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(x509.ExtensionNotFound):
        c.extensions.get_extension_for_class(x509.SubjectAlternativeName)


def test_serials_are_random(ca):
    pki.issue_client(ca, "a", "client")
    pki.issue_client(ca, "b", "client")
    serials = {load(ca / n).serial_number for n in ("ca.crt", "client-a.crt", "client-b.crt")}
    assert len(serials) == 3 and all(s > 2 ** 64 for s in serials)


def test_leaf_never_outlives_its_ca(tmp_path):
    d = tmp_path / "c"
    pki.init_ca(d, days=30)
    pki.issue_node(d, "n1", ["h1"], days=365)
    assert load(d / "node-n1.crt").not_valid_after_utc <= load(d / "ca.crt").not_valid_after_utc


def test_table_output(ca):
    r = cli("issue", "--dir", ca, "--node", "n1", "--host", "10.0.0.1", check=0)
    assert str(ca / "node-n1.crt") in r.stdout and str(ca / "node-n1.key") in r.stdout
    assert "CN=n1" in r.stdout and "node" in r.stdout and "10.0.0.1" in r.stdout


# -- refusing to overwrite -----------------------------------------------------------------

def test_init_refuses_to_replace_a_ca(ca):
    before = (ca / "ca.key").read_bytes()
    r = cli("init", ca, check=1)
    assert "already" in r.stderr and "--force" in r.stderr and r.stderr.count("\n") == 1
    assert (ca / "ca.key").read_bytes() == before
    cli("init", ca, "--force", check=0)
    assert (ca / "ca.key").read_bytes() != before
    assert mode(ca / "ca.key") == 0o600


def test_issue_refuses_to_overwrite(ca):
    cli("issue", "--dir", ca, "--node", "n1", "--host", "h1", check=0)
    cert, key = (ca / "node-n1.crt").read_bytes(), (ca / "node-n1.key").read_bytes()
    r = cli("issue", "--dir", ca, "--node", "n1", "--host", "h2", check=1)
    assert "node-n1" in r.stderr and "--force" in r.stderr
    assert (ca / "node-n1.crt").read_bytes() == cert and (ca / "node-n1.key").read_bytes() == key
    cli("issue", "--dir", ca, "--node", "n1", "--host", "h2", "--force", check=0)
    assert pki.describe(ca / "node-n1.crt")["hosts"] == ["h2"]
    assert (ca / "node-n1.key").read_bytes() != key and mode(ca / "node-n1.key") == 0o600
    pki.issue_client(ca, "x", "client")
    with pytest.raises(pki.PKIError, match="client-x.crt already exists"):
        pki.issue_client(ca, "x", "admin")
    assert pki.describe(ca / "client-x.crt")["role"] == "client"


# -- errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize("args, words", [
    (["--node", "n1", "--host", "h", "--client", "c", "--role", "admin"], "exactly one"),
    ([], "exactly one"),
    (["--node", "n1"], "--host"),
    (["--node", "n1", "--host", "h", "--role", "admin"], "--role"),
    (["--client", "c"], "--role"),
    (["--client", "c", "--role", "root"], "admin or client"),
    (["--client", "c", "--role", "node"], "admin or client"),
    (["--client", "c", "--role", "admin", "--host", "h"], "--host"),
    (["--node", "n 1", "--host", "h"], "node id"),
    (["--node", "../etc", "--host", "h"], "node id"),
    (["--node", "x" * 65, "--host", "h"], "node id"),
    (["--client", "", "--role", "admin"], "client name"),
    (["--client", "a/b", "--role", "admin"], "client name"),
    (["--node", "n1", "--host", "1.2.3.4:7001"], "without a port"),
    (["--node", "n1", "--host", "bad host"], "host"),
    (["--client", "c", "--role", "admin", "--days", "0"], "--days"),
    (["--client", "c", "--role", "admin", "--days", "-3"], "--days"),
])
def test_usage_errors(ca, args, words):
    r = cli("issue", "--dir", ca, *args, check=2)
    assert r.stderr.startswith("raftctl: error: ") and r.stderr.count("\n") == 1, r.stderr
    assert words in r.stderr
    assert sorted(p.name for p in ca.iterdir()) == ["ca.crt", "ca.key"]  # nothing written


def test_names_at_the_limits(ca):
    pki.issue_node(ca, "a" * 64, ["h"])
    pki.issue_client(ca, "A.b_c-9", "client")
    with pytest.raises(pki.PKIInputError):
        pki.issue_node(ca, "n1", [])
    with pytest.raises(pki.PKIInputError):
        pki.init_ca(ca / "x", cluster="bad cluster")


def test_missing_ca(tmp_path):
    d = tmp_path / "empty"
    r = cli("issue", "--dir", d, "--client", "alice", "--role", "admin", check=1)
    assert r.stderr == (f"raftctl: error: {d}/ca.key: no CA here; "
                        f"run `raftctl certs init {d}` first\n")
    assert not d.exists()
    r = cli("issue", "--dir", d, "--node", "n1", "--host", "h", "-o", "json", check=1)
    err = json.loads(r.stderr)
    assert err["exit_code"] == 1 and "no CA here" in err["message"] and r.stdout == ""


def test_broken_ca_files(ca):
    (ca / "ca.key").write_text("not a key\n")
    r = cli("issue", "--dir", ca, "--client", "a", "--role", "admin", check=1)
    assert "ca.key" in r.stderr and "not a PEM private key" in r.stderr
    other = pki.init_ca(ca.parent / "other")
    (ca / "ca.key").write_bytes(other.key.read_bytes())
    r = cli("issue", "--dir", ca, "--client", "a", "--role", "admin", check=1)
    assert "does not belong" in r.stderr


def test_describe_errors(tmp_path):
    with pytest.raises(pki.PKIError, match="no such file"):
        pki.describe(tmp_path / "nope.crt")
    (tmp_path / "junk.crt").write_text("hello\n")
    with pytest.raises(pki.PKIError, match=r"junk\.crt: not a PEM certificate"):
        pki.describe(tmp_path / "junk.crt")


# -- inspect ---------------------------------------------------------------------------------

def test_inspect_json_and_expiry_warnings(ca, monkeypatch):
    monkeypatch.chdir(ca.parent)  # short relative paths keep the table rows on one line
    ca = Path(ca.name)
    pki.issue_node(ca, "n1", ["127.0.0.1"])
    pki.issue_client(ca, "soon", "client", days=10)
    pki.issue_client(ca, "old", "client",
                     not_after=datetime.now(timezone.utc) - timedelta(days=2))
    files = [ca / "ca.crt", ca / "node-n1.crt", ca / "client-soon.crt", ca / "client-old.crt"]
    out = json.loads(cli("inspect", *files, "-o", "json", check=0).stdout)
    by = {i["name"]: i for i in out}
    assert [i["path"] for i in out] == [str(f) for f in files]
    assert by["prod CA"]["is_ca"] and by["prod CA"]["warning"] is False
    assert by["n1"]["warning"] is False and by["n1"]["hosts"] == ["127.0.0.1"]
    assert by["soon"]["warning"] is True and 9.9 <= by["soon"]["days_left"] <= 10.0
    assert by["old"]["warning"] is True and by["old"]["days_left"] < 0
    assert by["soon"]["role"] == "client" and by["soon"]["cluster"] == "prod"

    r = cli("inspect", *files, check=0)
    rows = {line.split()[1]: line for line in r.stdout.splitlines()
            if str(ca) in line}
    assert "EXPIRED" in rows[str(ca / "client-old.crt")]
    assert "expires soon" in rows[str(ca / "client-soon.crt")]
    assert "EXPIRED" not in rows[str(ca / "node-n1.crt")]
    assert "soon" not in rows[str(ca / "node-n1.crt")]
    assert "127.0.0.1" in rows[str(ca / "node-n1.crt")]
    assert "client-soon.crt expires in" in r.stderr and "client-old.crt EXPIRED" in r.stderr
    assert "node-n1" not in r.stderr


def test_inspect_unreadable_file(ca, tmp_path):
    (tmp_path / "junk.pem").write_text("junk")
    r = cli("inspect", ca / "ca.crt", tmp_path / "junk.pem", tmp_path / "missing.crt", check=1)
    assert "prod CA" in r.stdout  # the readable one is still shown
    lines = r.stderr.splitlines()
    assert len(lines) == 2 and all(x.startswith("raftctl: error: ") for x in lines)
    assert "junk.pem: not a PEM certificate" in lines[0] and "missing.crt" in lines[1]
    r = cli("inspect", tmp_path / "junk.pem", "-o", "json", check=1)
    assert json.loads(r.stdout) == [] and json.loads(r.stderr)["exit_code"] == 1


# -- mutual TLS with the issued certificates -------------------------------------------------

def _contexts(dirs: dict, server: str, client: str, server_ca: Path, client_ca: Path,
              hostname: str | None):
    s = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    s.verify_mode = ssl.CERT_REQUIRED
    s.verify_flags |= ssl.VERIFY_X509_STRICT
    s.load_verify_locations(server_ca)
    s.load_cert_chain(dirs["server"] / f"{server}.crt", dirs["server"] / f"{server}.key")
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = hostname is not None
    c.verify_flags |= ssl.VERIFY_X509_STRICT
    c.load_verify_locations(client_ca)
    c.load_cert_chain(dirs["client"] / f"{client}.crt", dirs["client"] / f"{client}.key")
    return s, c


def _handshake(server_ctx, client_ctx, hostname: str | None = None):
    """Handshake over 127.0.0.1 (both sides in threads); returns (server_result,
    client_result), each the peer certificate dict or the exception raised."""
    lsock = socket.create_server(("127.0.0.1", 0))
    lsock.settimeout(5)
    port = lsock.getsockname()[1]
    results: dict[str, object] = {}

    def serve():
        try:
            conn, _ = lsock.accept()
            conn.settimeout(5)
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                results["server"] = tls.getpeercert()
                tls.sendall(b"ok")
        except Exception as e:  # noqa: BLE001 - reported to the test
            results["server"] = e

    def dial():
        try:
            raw = socket.create_connection(("127.0.0.1", port), timeout=5)
            with client_ctx.wrap_socket(raw, server_hostname=hostname) as tls:
                peer = tls.getpeercert()
                # TLS 1.3: the server checks our certificate after our handshake returns,
                # so only a read tells whether it accepted us
                if tls.recv(2) != b"ok":
                    raise ConnectionError("server closed the connection")
                results["client"] = peer
        except Exception as e:  # noqa: BLE001 - any failure here is reported, never raised
            results["client"] = e

    threads = [threading.Thread(target=serve), threading.Thread(target=dial)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    lsock.close()
    assert not any(t.is_alive() for t in threads)
    return results["server"], results["client"]


def _subject(peer: dict) -> dict:
    return {k: v for rdn in peer["subject"] for k, v in rdn}


@pytest.fixture
def cluster_certs(ca):
    pki.issue_node(ca, "n1", ["127.0.0.1", "localhost"])
    pki.issue_node(ca, "n2", ["127.0.0.2"])
    pki.issue_client(ca, "alice", "admin")
    return ca


@pytest.mark.parametrize("client, cn, ou", [("client-alice", "alice", "admin"),
                                            ("node-n2", "n2", "node")])
def test_mutual_tls_handshake(cluster_certs, client, cn, ou):
    d = cluster_certs
    s, c = _contexts({"server": d, "client": d}, "node-n1", client, d / "ca.crt",
                     d / "ca.crt", None)
    server_saw, client_saw = _handshake(s, c)
    assert isinstance(server_saw, dict), server_saw
    assert isinstance(client_saw, dict), client_saw
    assert _subject(server_saw) == {"commonName": cn, "organizationalUnitName": ou,
                                    "organizationName": "prod"}
    assert _subject(client_saw)["commonName"] == "n1"
    assert _subject(client_saw)["organizationalUnitName"] == "node"


@pytest.mark.parametrize("hostname, ok", [("127.0.0.1", True), ("localhost", True),
                                          ("127.0.0.2", False), ("n9.example.com", False)])
def test_server_hostname_checked_against_sans(cluster_certs, hostname, ok):
    d = cluster_certs
    s, c = _contexts({"server": d, "client": d}, "node-n1", "client-alice", d / "ca.crt",
                     d / "ca.crt", hostname)
    server_saw, client_saw = _handshake(s, c, hostname)
    if ok:
        assert isinstance(client_saw, dict), client_saw
    else:
        assert isinstance(client_saw, ssl.SSLCertVerificationError), client_saw
        assert "mismatch" in str(client_saw) or "match" in str(client_saw)


def test_client_from_another_ca_is_refused(cluster_certs, tmp_path):
    d = cluster_certs
    other = tmp_path / "other"
    pki.init_ca(other, cluster="prod")  # same names, different key: must not pass
    pki.issue_client(other, "alice", "admin")
    s, c = _contexts({"server": d, "client": other}, "node-n1", "client-alice", d / "ca.crt",
                     d / "ca.crt", None)
    server_saw, client_saw = _handshake(s, c)
    assert isinstance(server_saw, ssl.SSLError), server_saw
    assert "certificate verify failed" in str(server_saw) or "unknown ca" in str(server_saw)
    assert isinstance(client_saw, Exception), client_saw


def test_server_from_another_ca_is_refused(cluster_certs, tmp_path):
    d = cluster_certs
    other = tmp_path / "other"
    pki.init_ca(other, cluster="prod")
    pki.issue_node(other, "n1", ["127.0.0.1"])
    s, c = _contexts({"server": other, "client": d}, "node-n1", "client-alice", d / "ca.crt",
                     d / "ca.crt", None)
    _, client_saw = _handshake(s, c)
    assert isinstance(client_saw, ssl.SSLCertVerificationError), client_saw
