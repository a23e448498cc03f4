"""cluster.tls for SSH-deployed clusters: the CA, the admin certificate and every host's node
certificate in the inventory's certs dir, and the files shipped to each host."""
from __future__ import annotations

import os
from pathlib import Path

from ..inventory import Host


def ensure_tls(inv, create: bool = True) -> None:
    """cluster.tls: make the CA, an admin client certificate and every host's node certificate
    that do not exist yet in the inventory's certs_dir, and use the admin certificate for this
    run's own requests unless the operator gave one (--cacert/--cert/--key)."""
    if not inv.tls_dir:
        return
    from raftd import pki  # noqa: PLC0415 - lazy import: only this path needs it (start-up time)

    d = Path(inv.tls_dir)
    if create:
        if not (d / "ca.crt").exists():
            pki.init_ca(d, cluster=inv.name)
        if not pki.client_paths(d, "admin").cert.exists():
            pki.issue_client(d, "admin", "admin")
        for h in inv.hosts:
            if not pki.node_paths(d, h.name).cert.exists():
                pki.issue_node(d, h.name, sorted({h.raft_address, h.address}))
    if not os.environ.get("RAFTCTL_CACERT") and pki.client_paths(d, "admin").cert.exists():
        admin = pki.client_paths(d, "admin")
        os.environ.update({"RAFTCTL_CACERT": str(admin.ca), "RAFTCTL_CERT": str(admin.cert),
                           "RAFTCTL_KEY": str(admin.key)})


def tls_files(inv, h: Host) -> dict | None:
    """What op_activate writes into <root>/tls on the host (see Inventory.node_config)."""
    if not inv.tls_dir:
        return None
    from raftd import pki  # noqa: PLC0415 - lazy import: only this path needs it (start-up time)

    p = pki.node_paths(inv.tls_dir, h.name)
    return {"ca.crt": p.ca.read_text(), "node.crt": p.cert.read_text(),
            "node.key": p.key.read_text()}

