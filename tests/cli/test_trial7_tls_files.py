"""issue 16 follow-up D: a missing cert or key file is named."""
import pytest

from raftd.tls import TLSConfigError, TLSFiles, client_context


def test_a_missing_client_certificate_is_named(tmp_path):
    key = tmp_path / "client.key"
    key.write_text("not a key")
    missing = str(tmp_path / "nothere.crt")
    with pytest.raises(TLSConfigError) as e:
        client_context(TLSFiles(ca="", cert=missing, key=str(key)))
    assert f"{missing}: no such file" in str(e.value)
    assert "None" not in str(e.value)
