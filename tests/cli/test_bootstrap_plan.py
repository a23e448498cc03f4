"""raftctl.bootstrap.plan: what bootstrap decides from the hosts' probes and the inventory,
checked without sshd or processes (issue 17 §2; the addresses rule of issue 16 §10)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from raftctl.bootstrap.plan import Rollback, address_changes, plan, preflight_problem
from raftctl.errors import FAILED, USAGE
from raftctl.inventory import parse_inventory

BUILD = {"build": "b2", "version": "1.0", "file": "raftd-1.0-py3-none-any.whl"}


def inventory(ports=(7101, 7102, 7103), names=("n1", "n2", "n3")):
    raw = {"cluster": {"name": "demo", "install_dir": "/opt/demo"},
           "ssh": {"user": "root", "known_hosts": "/kh"},
           "hosts": [{"name": n, "address": "127.0.0.1", "ssh_port": 2200 + i,
                      "raft_port": p} for i, (n, p) in enumerate(zip(names, ports, strict=True))]}
    return parse_inventory(raw, "inventory.yaml", Path("/inv"))


def probe(running=False, installed=None, build=None, config=None, has_log=False, **kw):
    installed = installed if installed is not None else build is not None
    state = {"build": build, "version": "0.9", "wheel": "old.whl", "manager": "process"} \
        if build else None
    return {"python": [3, 11, 7], "venv": True, "ensurepip": True, "unwritable": [],
            "systemd": False, "port_free": True, "port_error": None, "machine": "x86_64",
            "config": config, "has_log": has_log,
            "status": {"running": running, "installed": installed, "state": state,
                       "pid": 100 if running else None}, **kw}


def deployed(inv, build="b2", running=True, has_log=True, peers_from=None):
    """Probes of a cluster bootstrapped from ``peers_from`` (default: ``inv``)."""
    src = peers_from or inv
    return {h.name: probe(running=running, build=build, has_log=has_log,
                          config=src.node_config_text(src.host(h.name)))
            for h in inv.hosts}


def test_fresh_hosts_install_configure_and_start_all():
    inv = inventory()
    p = plan({h.name: probe() for h in inv.hosts}, inv, BUILD)
    assert p.mode == "start" and not p.refusals and p.changes
    for hp in p.hosts:
        assert hp.install and hp.start and not hp.restart and hp.config is not None
        cfg = yaml.safe_load(hp.config)
        assert cfg["peers"][hp.name] == cfg["listen"]
        assert cfg["peers"] == {"n1": "127.0.0.1:7101", "n2": "127.0.0.1:7102",
                                "n3": "127.0.0.1:7103"}


def test_rerun_on_a_running_cluster_changes_nothing():
    inv = inventory()
    p = plan(deployed(inv), inv, BUILD)
    assert p.mode == "start" and not p.refusals and not p.changes
    assert all(hp.config is None and not hp.install and not hp.start for hp in p.hosts)


def test_resume_after_teardown_starts_without_rewriting_configs():
    inv = inventory()
    p = plan(deployed(inv, running=False), inv, BUILD)
    assert not p.refusals
    assert all(hp.start and hp.config is None and not hp.install for hp in p.hosts)


def test_new_build_on_a_running_cluster_needs_upgrade():
    inv = inventory()
    p = plan(deployed(inv, build="b1"), inv, BUILD)
    (r,) = p.refusals
    assert r.code == FAILED and r.kind == "needs_upgrade" and "--upgrade" in r.message
    assert "n1: build b1 (raftd 0.9) -> b2 (raftd 1.0)" in r.message


def test_upgrade_restarts_outdated_nodes_with_declared_rollback():
    inv = inventory()
    probes = deployed(inv, build="b1")
    probes["n3"] = probe(running=True, build="b2",
                         config=inv.node_config_text(inv.host("n3")), has_log=True)
    p = plan(probes, inv, BUILD, upgrade=True)
    assert p.mode == "upgrade" and not p.refusals
    assert [hp.name for hp in p.hosts if hp.restart] == ["n1", "n2"]
    n1 = p.host("n1")
    assert n1.install and n1.rollback == Rollback("b1", "0.9", "old.whl",
                                                  probes["n1"]["config"])
    assert p.host("n3").rollback is None and not p.host("n3").install


def test_a_host_that_is_not_a_member_points_to_add_host():
    inv3, inv4 = inventory(), inventory((7101, 7102, 7103, 7104), ("n1", "n2", "n3", "n4"))
    probes = {**deployed(inv3), "n4": probe()}
    p = plan(probes, inv4, BUILD, inventory_path="inv4.yaml")
    (r,) = p.refusals
    assert r.host == "n4" and r.code == USAGE
    assert "raftctl bootstrap --add-host n4 inv4.yaml" in r.message


def test_changed_raft_ports_with_a_log_are_refused_naming_host_and_difference():
    """Issue 16 §10: teardown without --purge, raft ports changed in the inventory."""
    old, new = inventory(), inventory((7201, 7202, 7203))
    p = plan(deployed(new, running=False, peers_from=old), new, BUILD,
             inventory_path="inv.yaml")
    assert not p.hosts and len(p.refusals) == 3
    assert {r.code for r in p.refusals} == {USAGE}
    n1 = next(r for r in p.refusals if r.host == "n1")
    assert "listen 127.0.0.1:7101 -> 127.0.0.1:7201" in n1.message
    assert "peer n2 127.0.0.1:7102 -> 127.0.0.1:7202" in n1.message
    assert "raftctl teardown --purge inv.yaml" in n1.message
    assert "n1, n2, n3" in p.summary and "nothing was changed" in p.summary


def test_changed_raft_ports_without_a_log_apply_the_inventory():
    old, new = inventory(), inventory((7201, 7202, 7203))
    p = plan(deployed(new, running=False, has_log=False, peers_from=old), new, BUILD)
    assert not p.refusals
    for hp in p.hosts:
        cfg = yaml.safe_load(hp.config)
        assert cfg["listen"] == new.host(hp.name).endpoint == cfg["peers"][hp.name]
        assert cfg["peers"] == {h.name: h.endpoint for h in new.hosts}
        assert hp.start


def test_one_changed_port_is_refused_when_any_data_dir_holds_a_log():
    old, new = inventory(), inventory((7101, 7102, 7999))
    probes = deployed(new, running=False, has_log=False, peers_from=old)
    probes["n2"]["has_log"] = True
    p = plan(probes, new, BUILD)
    assert [r.host for r in p.refusals] == ["n1", "n2", "n3"]
    assert "peer n3 127.0.0.1:7103 -> 127.0.0.1:7999" in p.refusals[0].message
    assert "listen 127.0.0.1:7103 -> 127.0.0.1:7999" in p.refusals[2].message


def test_address_changes_ignores_join_configs_and_unknown_peers():
    inv = inventory()
    cfg = {"id": "n3", "listen": "127.0.0.1:7103", "join": True}
    assert address_changes(inv, {"n3": cfg}) == {}
    cfg = {"listen": "127.0.0.1:7101", "peers": {"n1": "127.0.0.1:7101", "gone": "x:1"}}
    assert address_changes(inv, {"n1": cfg}) == {}


@pytest.mark.parametrize("change, expect", [
    ({"venv": False}, "has no venv module"),
    ({"ensurepip": False}, "cannot create virtualenvs with pip"),
    ({"unwritable": [["/opt/demo", "/opt"]]}, "cannot create /opt/demo (/opt is not writable)"),
    ({"port_free": False, "port_error": "EADDRINUSE"}, "raft port 127.0.0.1:7101 is in use"),
])
def test_preflight_problems(change, expect):
    inv = inventory()
    assert preflight_problem(inv.hosts[0], probe(), inv, offline=False) is None
    assert expect in preflight_problem(inv.hosts[0], probe(**change), inv, offline=False)


def test_no_plan_ever_writes_a_config_listing_a_node_at_another_address():
    """Whatever the hosts hold (configs from the inventory or from one with other ports,
    none, logs or not, running or not), every config a plan writes lists each node in
    peers at the address it listens on (issue 16 §10).  Seeded: replayable."""
    import random
    rng = random.Random(1610)
    new = inventory((7201, 7202, 7203))
    sources = [None, inventory(), inventory((7101, 7202, 7203)), new]
    for _ in range(300):
        probes = {}
        for h in new.hosts:
            src = rng.choice(sources)
            probes[h.name] = probe(
                running=src is not None and rng.random() < 0.3,
                build=rng.choice([None, "b1", "b2"]) if src is not None else None,
                has_log=src is not None and rng.random() < 0.5,
                config=src.node_config_text(src.host(h.name)) if src else None)
        p = plan(probes, new, BUILD, upgrade=rng.random() < 0.5)
        for hp in p.hosts:
            if hp.config is not None:
                cfg = yaml.safe_load(hp.config)
                assert cfg.get("join") or cfg["peers"][hp.name] == cfg["listen"], hp


# --- issue 14 §9: a new cluster gets a new random cluster_id ---------------------------------
def _cluster_ids(p) -> set:
    return {yaml.safe_load(hp.config).get("cluster_id") for hp in p.hosts}


def test_a_new_cluster_gets_one_new_random_cluster_id_on_every_node():
    """Every node's config carries the same cluster_id, and another new cluster (the same
    inventory again, from scratch) gets another: two clusters never share one."""
    inv = inventory()
    fresh = {h.name: probe() for h in inv.hosts}
    (first,) = _cluster_ids(plan(fresh, inv, BUILD))
    (second,) = _cluster_ids(plan(fresh, inv, BUILD))
    assert first and second and first != second
    from raftd.config import parse_config
    for hp in plan(fresh, inv, BUILD).hosts:
        assert parse_config(yaml.safe_load(hp.config), hp.name).cluster_id  # raftd takes it


def test_an_existing_cluster_keeps_its_cluster_id():
    """Re-runs, resumes and a host added back to the initial peers keep the id the running
    cluster's configs hold; a cluster bootstrapped before ids (none in its configs) gets none
    (its nodes derived one and keep it in their data dirs: a new one would stop them)."""
    inv = inventory()
    made = plan({h.name: probe() for h in inv.hosts}, inv, BUILD)
    (cid,) = _cluster_ids(made)
    probes = {hp.name: probe(running=False, build="b2", has_log=True, config=hp.config)
              for hp in made.hosts}
    again = plan(probes, inv, BUILD)
    assert not again.refusals and all(hp.config is None for hp in again.hosts)
    probes["n2"] = probe()  # its config lost: rewritten with the cluster's id
    (hp,) = [h for h in plan(probes, inv, BUILD).hosts if h.config is not None]
    assert hp.name == "n2" and yaml.safe_load(hp.config)["cluster_id"] == cid
    old = plan(deployed(inv), inv, BUILD)  # configs without cluster_id
    assert not old.changes
    up = plan(deployed(inv, build="b1"), inv, BUILD, upgrade=True)
    assert all("cluster_id" not in yaml.safe_load(hp.config or "{}") for hp in up.hosts)


def test_changed_ports_without_a_log_keep_the_cluster_id_the_data_dirs_hold():
    """The configs are rewritten from the inventory, but each data dir still holds the
    cluster_id it was started with (only the logs are gone) and raftd refuses another one:
    the new configs keep it (found by tests/ssh test_changed_raft_ports_are_refused_or_applied)."""
    old, new = inventory(), inventory((7201, 7202, 7203))
    made = plan({h.name: probe() for h in old.hosts}, old, BUILD)
    (cid,) = _cluster_ids(made)
    probes = {hp.name: probe(build="b2", config=hp.config) for hp in made.hosts}
    p = plan(probes, new, BUILD)
    assert not p.refusals and _cluster_ids(p) == {cid}
    assert all(yaml.safe_load(hp.config)["listen"] == new.host(hp.name).endpoint
               for hp in p.hosts)
