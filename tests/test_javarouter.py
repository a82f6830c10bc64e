"""The Java router's pure parts: the I2CP password hash and the router.config."""

from __future__ import annotations

import pytest

from i2p_multihome_dev.javarouter import password_hash, router_config

# Checked with Java I2P 2.7.0 itself: net.i2p.util.PasswordManager.checkHash(SHASH, PASSWORD)
# is true, and false for PASSWORD + "x".
PASSWORD = "multihome test password"  # noqa: S105 (a test vector, not a secret)
SALT = bytes(range(16))
SHASH = "AAECAwQFBgcICQoLDA0OD1XUDrsS~xjzT3dc6GUptobYVaPbX9sS0lO-cha5z7~5"


def test_password_hash_matches_java_password_manager() -> None:
    assert password_hash(PASSWORD, SALT) == SHASH
    assert password_hash(PASSWORD + "x", SALT) != SHASH
    with pytest.raises(ValueError, match="16 bytes"):
        password_hash(PASSWORD, b"short")


def test_router_config_reaches_out_to_nobody_and_requires_auth() -> None:
    config = dict(
        line.split("=", 1) for line in router_config("198.18.0.7", 17654, {"u": "p"}, True).split()
    )
    # No transports, no reseed, no clock sync: nothing but I2CP clients to talk to.
    assert config["i2np.ntcp.enable"] == config["i2np.udp.enable"] == "false"
    assert config["i2np.upnp.enable"] == "false"
    assert config["router.reseedDisable"] == config["time.disabled"] == "true"
    assert (config["i2cp.hostname"], config["i2cp.port"]) == ("198.18.0.7", "17654")
    assert config["i2cp.SSL"] == config["i2cp.auth"] == "true"
    assert "p" not in config.values()  # only the salted hash is written
    assert len(config["i2cp.auth.u.shash"]) == 64
    assert router_config("h", 1, {}, False).count("i2cp.auth=false") == 1
