"""Config validation: every error names the file and the key."""
import pytest

from raftd.config import ConfigError, load_config, parse_config

GOOD = {"id": "n1", "listen": "127.0.0.1:7001", "data_dir": "/tmp/x",
        "peers": {"n1": "127.0.0.1:7001", "n2": "127.0.0.1:7002"}}


def test_good_config_parses_with_defaults():
    cfg = parse_config(GOOD, "node.yaml")
    assert cfg.port == 7001 and cfg.fsync is True and cfg.election_ticks >= 2


@pytest.mark.parametrize("change, key, words", [
    ({"colour": "blue"}, "colour", "unknown key"),
    ({"listen": "127.0.0.1"}, "listen", "host:port"),
    ({"listen": "127.0.0.1:99999"}, "listen", "out of range"),
    ({"peers": {"n1": "127.0.0.1:7001", "n2": "nohost:"}}, "peers.n2", "bad address"),
    ({"tick_ms": "fast"}, "tick_ms", "expected int"),
    ({"fsync": 1}, "fsync", "expected bool"),
    ({"election_timeout_ms": 0}, "election_timeout_ms", "positive"),
    ({"peers": {"n2": "127.0.0.1:7002"}}, "peers", "own id"),
    ({"heartbeat_interval_ms": 900}, "heartbeat_interval_ms", "half"),
    # issue 14 §9 / 16 §10: peers must reach this node where it listens
    ({"peers": {"n1": "127.0.0.1:7101", "n2": "127.0.0.1:7002"}}, "peers.n1",
     "must name the same address"),
    ({"listen": "10.0.0.1:7001"}, "peers.n1", "listens on 10.0.0.1:7001"),
    # issue 19 §8: ids are short and plain
    ({"id": "n 1"}, "id", "bad server id"),
    ({"peers": {"n1": "127.0.0.1:7001", "x" * 65: "127.0.0.1:7002"}}, "peers." + "x" * 65,
     "at most 64"),
    ({"tls": {"ca": "ca.crt", "cert": "n1.crt"}}, "tls.key", "missing"),
    ({"tls": {"ca": "c", "cert": "c", "key": "k", "colour": 1}}, "tls.colour", "unknown key"),
    ({"tls": {"ca": "", "cert": "c", "key": "k"}}, "tls.ca", "file path"),
    ({"tls": "on"}, "tls", "expected"),
    ({"max_value_size": 0}, "max_value_size", "positive"),
    ({"max_sessions": 10**9}, "max_sessions", "at most"),
    ({"event_loop": "trio"}, "event_loop", "expected auto"),
    ({"inline_fsync": "yes"}, "inline_fsync", "expected true, false or auto"),
    ({"wal_preallocate_bytes": -1}, "wal_preallocate_bytes", "0 or more"),
    ({"inline_fsync": 1}, "inline_fsync", "expected"),
    ({"event_loop": "uvloop", "tls": {"ca": "c", "cert": "c", "key": "k"}}, "event_loop",
     "cannot be used with tls"),
])
def test_bad_values_name_file_and_key(change, key, words):
    with pytest.raises(ConfigError) as e:
        parse_config({**GOOD, **change}, "node.yaml")
    msg = str(e.value)
    assert msg.startswith("node.yaml: key '" + key + "'") and words in msg, msg


@pytest.mark.parametrize("value", [True, False, "auto"])
def test_inline_fsync_modes(value):
    assert parse_config({**GOOD, "inline_fsync": value}, "n.yaml").inline_fsync == value
    assert parse_config(GOOD, "n.yaml").inline_fsync == "auto"  # the default


def test_missing_required_key():
    raw = dict(GOOD)
    del raw["data_dir"]
    with pytest.raises(ConfigError, match="key 'data_dir': missing"):
        parse_config(raw, "n.yaml")


def test_join_node_needs_no_peers():
    cfg = parse_config({"id": "n4", "listen": "127.0.0.1:7004", "data_dir": "/tmp/y",
                        "join": True}, "n.yaml")
    assert cfg.join and cfg.peers == {}


def test_bad_yaml_names_line(tmp_path):
    p = tmp_path / "n.yaml"
    p.write_text("id: n1\nlisten: [127.0.0.1\n")
    with pytest.raises(ConfigError, match=r"n.yaml: invalid YAML at line \d+"):
        load_config(p)


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_example_configs_are_valid():
    import pathlib

    files = sorted(pathlib.Path(__file__).parents[2].joinpath("configs").glob("node*.yaml"))
    assert files
    for f in files:
        load_config(f)


def test_tls_paths_are_relative_to_the_config_file():
    raw = {**GOOD, "tls": {"ca": "certs/ca.crt", "cert": "/abs/n1.crt", "key": "n1.key"}}
    cfg = parse_config(raw, "/etc/raftd/node.yaml")
    assert cfg.tls.ca == "/etc/raftd/certs/ca.crt" and cfg.tls.cert == "/abs/n1.crt"
    assert cfg.tls.key == "/etc/raftd/n1.key" and cfg.tls.client_ca is None
    assert parse_config(GOOD, "node.yaml").tls is None


def test_max_sessions_limit_matches_the_state_machine():
    from raftd import config
    from raftd.kv import fsm
    assert config.DEFAULT_MAX_SESSIONS == fsm.DEFAULT_MAX_SESSIONS


def test_a_wildcard_listen_host_serves_the_address_peers_use():
    cfg = parse_config({**GOOD, "listen": "0.0.0.0:7001",
                        "peers": {"n1": "10.0.0.1:7001", "n2": "10.0.0.2:7001"}}, "node.yaml")
    assert cfg.listen == "0.0.0.0:7001"
