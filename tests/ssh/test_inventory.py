"""Inventory validation (raftctl/inventory.py): no SSH, no processes."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from raftctl.inventory import InventoryError, load_inventory, parse_inventory
from raftd.config import parse_config

MINIMAL = """\
cluster: {name: demo}
ssh: {user: root, identity_file: ~/.ssh/id_ed25519, known_hosts: ./known_hosts}
hosts:
  - {name: n1, address: 127.0.0.1, ssh_port: 2201, raft_port: 7101, data_dir: /tmp/demo/n1}
  - {name: n2, address: 127.0.0.1, ssh_port: 2202, raft_port: 7102, data_dir: /tmp/demo/n2}
  - {name: n3, address: 127.0.0.1, ssh_port: 2203, raft_port: 7103, data_dir: /tmp/demo/n3}
"""


def base() -> dict:
    return yaml.safe_load(MINIMAL)


def error_of(raw, source="inventory.yaml") -> str:
    with pytest.raises(InventoryError) as e:
        parse_inventory(raw, source, Path("/inv"))
    return str(e.value)


def test_minimal_form(tmp_path):
    f = tmp_path / "inventory.yaml"
    f.write_text(MINIMAL)
    inv = load_inventory(f)
    assert inv.name == "demo" and inv.python == "python3" and inv.service == "auto"
    assert inv.install_dir == "/opt/raftd/demo"
    # relative paths are relative to the inventory file; ~ expands
    assert inv.ssh.known_hosts == str(tmp_path / "known_hosts")
    assert inv.ssh.identity_file == os.path.expanduser("~/.ssh/id_ed25519")
    assert inv.ssh.user == "root" and inv.ssh.port == 22
    assert [h.name for h in inv.hosts] == ["n1", "n2", "n3"]
    n2 = inv.hosts[1]
    assert (n2.address, n2.ssh_port, n2.raft_port, n2.data_dir) == \
        ("127.0.0.1", 2202, 7102, "/tmp/demo/n2")
    assert n2.endpoint == "127.0.0.1:7102"
    # every host has its own directory, even when all share one machine
    assert len({h.root for h in inv.hosts}) == 3 and n2.root == "/opt/raftd/demo/n2"
    assert n2.unit == "raftd-demo-n2.service"


def test_node_config_is_a_valid_raftd_config():
    raw = base()
    raw["cluster"].update(tick_ms=25, election_timeout_ms=500, fsync=False)
    inv = parse_inventory(raw, "inventory.yaml", Path("/inv"))
    text = inv.node_config_text(inv.hosts[0])
    cfg = parse_config(yaml.safe_load(text), "n1.yaml")
    assert cfg.id == "n1" and cfg.listen == "127.0.0.1:7101" and cfg.data_dir == "/tmp/demo/n1"
    assert cfg.peers == {"n1": "127.0.0.1:7101", "n2": "127.0.0.1:7102",
                         "n3": "127.0.0.1:7103"}
    assert cfg.cluster == "demo" and cfg.tick_ms == 25 and cfg.fsync is False
    join = parse_config(yaml.safe_load(inv.node_config_text(inv.hosts[2], join=True)), "j")
    assert join.join is True and join.peers == {}


def test_defaults_data_dir_and_install_dir():
    raw = base()
    for h in raw["hosts"]:
        del h["data_dir"]
        del h["ssh_port"]
    raw["cluster"]["install_dir"] = "/srv/raftd/"
    raw["ssh"]["port"] = 2222
    raw["hosts"][0]["address"] = "10.0.0.1"
    raw["hosts"][1]["address"] = "10.0.0.2"
    inv = parse_inventory(raw, "inventory.yaml", Path("/inv"))
    assert inv.install_dir == "/srv/raftd"
    assert [h.data_dir for h in inv.hosts] == [f"/srv/raftd/data/n{i}" for i in (1, 2, 3)]
    assert [h.root for h in inv.hosts] == [f"/srv/raftd/n{i}" for i in (1, 2, 3)]
    assert {h.ssh_port for h in inv.hosts} == {2222}


def test_wrong_type_names_file_host_and_key():
    raw = base()
    raw["hosts"][1]["raft_port"] = "7102"
    assert error_of(raw) == ("inventory.yaml: hosts[1] (n2): key 'raft_port': expected int, "
                             "got str '7102'")


def test_unknown_keys_are_errors():
    raw = base()
    raw["hosts"][2]["raft-port"] = 1
    assert error_of(raw).startswith("inventory.yaml: hosts[2] (n3): key 'raft-port': unknown key")
    raw = base()
    raw["cluster"]["tick"] = 5
    assert error_of(raw).startswith("inventory.yaml: key 'cluster.tick': unknown key")
    raw = base()
    raw["ssh"]["password"] = "x"
    assert "key 'ssh.password': unknown key" in error_of(raw)
    raw = base()
    raw["nodes"] = []
    assert "key 'nodes': unknown key" in error_of(raw)


def test_missing_required_keys():
    raw = base()
    del raw["hosts"][0]["raft_port"]
    assert error_of(raw) == "inventory.yaml: hosts[0] (n1): key 'raft_port': missing (required)"
    raw = base()
    del raw["hosts"][1]["name"]
    assert error_of(raw) == "inventory.yaml: hosts[1]: key 'name': missing (required)"
    raw = base()
    del raw["cluster"]["name"]
    assert error_of(raw) == "inventory.yaml: key 'cluster.name': missing (required)"
    raw = base()
    raw["hosts"] = []
    assert "key 'hosts': expected a non-empty list" in error_of(raw)
    assert "expected a mapping" in error_of(["not", "a", "mapping"])


def test_duplicate_names_and_ports():
    raw = base()
    raw["hosts"][2]["name"] = "n1"
    assert error_of(raw) == ("inventory.yaml: hosts[2] (n1): key 'name': duplicate host name "
                             "'n1' (also hosts[0])")
    raw = base()
    raw["hosts"][2]["raft_port"] = 7101
    assert error_of(raw) == ("inventory.yaml: hosts[2] (n3): key 'raft_port': 127.0.0.1:7101 "
                             "is also used by hosts[0] (n1)")
    raw = base()  # the same port on different addresses is fine
    raw["hosts"][2].update(raft_port=7101, address="127.0.0.3")
    parse_inventory(raw, "inventory.yaml", Path("/inv"))
    raw = base()
    raw["hosts"][1]["data_dir"] = "/tmp/demo/n1"
    assert "hosts[1] (n2): key 'data_dir': /tmp/demo/n1 is also the data_dir of hosts[0]" \
        in error_of(raw)


def test_bad_values():
    cases = [
        (("hosts", 0, "raft_port"), 70000, "hosts[0] (n1): key 'raft_port': port out of range"),
        (("hosts", 0, "address"), "bad address!", "hosts[0] (n1): key 'address': bad address"),
        (("hosts", 0, "name"), "n 1", "key 'name': 'n 1' is not a valid node name"),
        (("hosts", 0, "data_dir"), "relative/dir", "key 'data_dir': must be an absolute path"),
        (("cluster", "install_dir"), "opt/raftd", "key 'cluster.install_dir': must be an "
                                                  "absolute path"),
        (("cluster", "name"), "a/b", "key 'cluster.name': 'a/b' is not a valid name"),
        (("cluster", "service"), "upstart", "key 'cluster.service': expected one of"),
        (("cluster", "tick_ms"), "fast", "inventory.yaml: cluster: key 'tick_ms': expected int"),
        (("cluster", "fsync"), "yes", "cluster: key 'fsync': expected bool"),
        (("ssh", "port"), True, "key 'ssh.port': expected int, got bool True"),
        (("ssh", "connect_timeout"), 0, "key 'ssh.connect_timeout': must be positive"),
    ]
    for path, value, expected in cases:
        raw = base()
        d = raw
        for p in path[:-1]:
            d = d[p]
        d[path[-1]] = value
        assert expected in error_of(raw), (path, value)
    raw = base()  # raftd's own cross-key rules apply to the tuning
    raw["cluster"].update(election_timeout_ms=100, heartbeat_interval_ms=80)
    assert "cluster: key 'heartbeat_interval_ms': must be at most half" in error_of(raw)
    raw = base()
    raw["hosts"][0]["ssh_port"] = 7101
    assert "hosts[0] (n1): key 'raft_port': 7101 is also this host's SSH port" in error_of(raw)


def test_load_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(InventoryError, match="nope.yaml: cannot read"):
        load_inventory(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("cluster: {name: demo\nhosts: [")
    with pytest.raises(InventoryError, match=r"bad.yaml: invalid YAML at line \d+"):
        load_inventory(bad)


def test_cli_reports_validation_error_with_exit_2(tmp_path):
    import subprocess
    import sys
    raw = base()
    raw["hosts"][1]["raft_port"] = "7102"
    f = tmp_path / "inventory.yaml"
    f.write_text(yaml.safe_dump(raw))
    for args in (["bootstrap", str(f)], ["ssh", "status", str(f)], ["teardown", str(f)]):
        r = subprocess.run([sys.executable, "-m", "raftctl.main", *args], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert r.stderr.strip().splitlines() == [
            f"raftctl: error: {f}: hosts[1] (n2): key 'raft_port': expected int, got str '7102'"]


def test_example_inventory_is_valid():
    example = Path(__file__).resolve().parents[2] / "configs" / "inventory.example.yaml"
    inv = load_inventory(example)
    assert inv.name == "demo" and [h.name for h in inv.hosts] == ["n1", "n2", "n3"]
    assert inv.hosts[2].ssh_port == 2222 and inv.hosts[0].ssh_port == 22
    for h in inv.hosts:
        parse_config(yaml.safe_load(inv.node_config_text(h)), h.name)
