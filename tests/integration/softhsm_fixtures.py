"""A SoftHSM2 token for integration tests: the PKCS#11 HSM of the test run.

One token per pytest-xdist worker (session scope), in the worker's tmp dir;
SoftHSM2 reads `SOFTHSM2_CONF` when its library initialises, so the fixture
points this process at the token and puts the old value back at the end.
A missing softhsm2 fails the run with the command that installs it: a green
run that skipped the HSM would prove nothing.

Use with `pytest_plugins = ["softhsm_fixtures"]` in a test module.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from v2c.contract.errors import ConfigurationError
from v2c.handlers.signing.pkcs11 import Pkcs11Config, generate_keypair
from v2c.handlers.signing.softhsm import SoftHsmToken, init_softhsm_token

SO_PIN = "v2c-so-pin-1234"
USER_PIN = "v2c-user-pin-1234"


@pytest.fixture(scope="session")
def softhsm_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsmToken]:
    """An initialised token labelled `v2c`, active in this process."""
    root = tmp_path_factory.mktemp("softhsm")
    try:
        token = init_softhsm_token(root, label="v2c", so_pin=SO_PIN, user_pin=USER_PIN)
    except ConfigurationError as exc:
        pytest.fail(f"SoftHSM2 is required for the PKCS#11 tests: {exc.detail}", pytrace=False)
    previous = os.environ.get("SOFTHSM2_CONF")
    token.activate()
    yield token
    if previous is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = previous


@pytest.fixture
def hsm_key(softhsm_token: SoftHsmToken) -> Pkcs11Config:
    """A fresh P-256 key pair on the token, under a label of its own."""
    config = softhsm_token.pkcs11_config(f"ota-{uuid.uuid4().hex[:12]}")
    assert generate_keypair(config)
    return config
