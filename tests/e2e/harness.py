"""Real raftd processes on 127.0.0.0/8 for end-to-end tests.

Each node gets its own loopback address (127.0.0.<base+i>) so nftables rules can cut links
between nodes (raftd binds its outgoing connections to its listen address)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from raftctl.commands.local import free_base_port  # noqa: F401 - tests import it from here
from raftd.client import Client
from tests.ports import free_port  # noqa: F401 - tests import it from here

# Every node of every test cluster gets an address of its own in 127.<a>.<b>.<c> (all of
# 127.0.0.0/8 is loopback), a per process, so nftables rules of one test never touch another's.
_PROCESS_OCTET = 10 + os.getpid() % 200
_next_host = [0]


def _new_host() -> str:
    k = _next_host[0]
    _next_host[0] += 1
    return f"127.{_PROCESS_OCTET}.{k // 250}.{k % 250 + 1}"


class Node:
    def __init__(self, nid: str, address: str, data_dir: Path, config: Path):
        self.id = nid
        self.address = address
        self.host = address.rsplit(":", 1)[0]
        self.data_dir = data_dir
        self.config = config
        self.proc: subprocess.Popen | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        log = open(self.data_dir / "raftd.log", "ab")  # noqa: SIM115 - the file outlives this call: the child process writes it
        self.proc = subprocess.Popen([sys.executable, "-m", "raftd", "--config", str(self.config)],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()

    def kill9(self) -> None:
        if self.running:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int | None:
        if self.running:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                return self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode if self.proc else None

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def log_text(self) -> str:
        return (self.data_dir / "raftd.log").read_text(errors="replace")


class LocalCluster:
    def __init__(self, root: Path, n: int = 3, tls: bool = False, **tuning):
        """``tls``: a CA in root/certs, a node certificate per node, and the clients this
        object makes (client(), status()) use an admin certificate."""
        self.root = root
        self.nodes: dict[str, Node] = {}
        self.certs = root / "certs" if tls else None
        self.client_tls = None
        if tls:
            from raftd import pki
            from raftd.tls import TLSFiles
            pki.init_ca(self.certs, cluster="test")
            admin = pki.issue_client(self.certs, "admin", "admin")
            self.client_tls = TLSFiles(str(admin.ca), str(admin.cert), str(admin.key))
        addrs = {}
        for i in range(1, n + 1):
            host = _new_host()
            addrs[f"n{i}"] = f"{host}:{free_port(host)}"
        conf = {"tick_ms": 20, "election_timeout_ms": 300, "heartbeat_interval_ms": 60,
                **tuning}
        self._tuning = conf
        self._count = n
        for nid, addr in addrs.items():
            d = root / nid
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
            cfg = d / "raftd.yaml"
            cfg.write_text(yaml.safe_dump({"id": nid, "listen": addr, "data_dir": str(d),
                                           "peers": addrs, **conf, **self._tls_conf(nid, addr)}))
            self.nodes[nid] = Node(nid, addr, d, cfg)

    def _tls_conf(self, nid: str, addr: str) -> dict:
        if self.certs is None:
            return {}
        from raftd import pki
        p = pki.issue_node(self.certs, nid, [addr.rsplit(":", 1)[0]], force=True)
        return {"tls": {"ca": str(p.ca), "cert": str(p.cert), "key": str(p.key)}}

    def add_join_node(self, **tuning) -> Node:
        """A new node with `join: true` (empty, waits to be added); started.  ``tuning``
        overrides the cluster's settings for this node."""
        self._count += 1
        nid = f"n{self._count}"
        host = _new_host()
        addr = f"{host}:{free_port(host)}"
        d = self.root / nid
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        cfg = d / "raftd.yaml"
        cfg.write_text(yaml.safe_dump({"id": nid, "listen": addr, "data_dir": str(d),
                                       "join": True, **self._tuning, **tuning,
                                       **self._tls_conf(nid, addr)}))
        node = Node(nid, addr, d, cfg)
        self.nodes[nid] = node
        node.start()
        return node

    @property
    def endpoints(self) -> list[str]:
        return [n.address for n in self.nodes.values()]

    def start(self) -> "LocalCluster":
        for n in self.nodes.values():
            n.start()
        return self

    def fill(self, keys: dict[str, bytes], concurrency: int = 64) -> dict[str, int]:
        """Write many keys quickly (many requests in flight); returns key -> log index."""
        import asyncio

        from raftd.client import AsyncClient

        async def run() -> dict[str, int]:
            out: dict[str, int] = {}
            items = list(keys.items())
            async with AsyncClient(self.endpoints, timeout=20, tls=self.client_tls) as c:
                for i in range(0, len(items), concurrency):
                    chunk = items[i:i + concurrency]
                    idx = await asyncio.gather(*(c.put(k, v) for k, v in chunk))
                    out.update(zip((k for k, _ in chunk), idx, strict=True))
            return out

        return asyncio.run(run())

    def client(self, timeout: float = 10.0) -> Client:
        return Client(self.endpoints, timeout=timeout, tls=self.client_tls)

    def status(self, nid: str, timeout: float = 1.0, digest: bool = False) -> dict | None:
        node = self.nodes[nid]
        if not node.running:
            return None
        c = Client([node.address], timeout=timeout, tls=self.client_tls)
        try:
            return c.status(node.address, timeout, digest)
        except Exception:  # noqa: BLE001 - any failure here is reported, never raised
            return None
        finally:
            c.close()

    def wait_leader(self, timeout: float = 15.0, exclude: set[str] = frozenset()) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for nid, n in self.nodes.items():
                if nid in exclude or not n.running:
                    continue
                st = self.status(nid, 0.5)
                if st and st["role"] == "leader":
                    return nid
            time.sleep(0.05)
        raise AssertionError(f"no leader within {timeout}s:\n" + self.logs_tail())

    def wait_applied(self, index: int, nids=None, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        nids = nids or [n for n in self.nodes if self.nodes[n].running]
        while time.monotonic() < deadline:
            sts = [self.status(n) for n in nids]
            if all(s and s["applied_index"] >= index for s in sts):
                return
            time.sleep(0.1)
        raise AssertionError(f"nodes {nids} did not apply index {index} within {timeout}s: "
                             f"{[(s or {}).get('applied_index') for s in sts]}")

    def logs_tail(self, lines: int = 15) -> str:
        out = []
        for n in self.nodes.values():
            try:
                tail = n.log_text().splitlines()[-lines:]
            except OSError:
                tail = []
            out.append(f"--- {n.id} ---\n" + "\n".join(tail))
        return "\n".join(out)

    def stop(self) -> None:
        for n in self.nodes.values():
            n.stop()


def nft_available() -> bool:
    if shutil.which("nft") is None or os.geteuid() != 0:
        return False
    r = subprocess.run(["nft", "list", "tables"], capture_output=True)
    return r.returncode == 0


class Firewall:
    """Cuts links between nodes with an nftables table of our own (deleted on heal)."""

    def __init__(self, name: str):
        self.table = name
        self.active = False

    def _nft(self, *args: str) -> None:
        subprocess.run(["nft", *args], check=True, capture_output=True)

    def cut(self, pairs: list[tuple[str, str]]) -> None:
        """Drop packets from a to b for every (a, b) host pair."""
        if not self.active:
            self._nft("add", "table", "ip", self.table)
            self._nft("add", "chain", "ip", self.table, "out",
                      "{ type filter hook output priority 0 ; }")
            self.active = True
        for a, b in pairs:
            self._nft("add", "rule", "ip", self.table, "out", "ip", "saddr", a, "ip", "daddr", b,
                      "drop")

    def heal(self) -> None:
        if self.active:
            subprocess.run(["nft", "delete", "table", "ip", self.table], capture_output=True)
            self.active = False
