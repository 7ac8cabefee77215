"""A SoftHSM2 token in a directory of its own: the development and test HSM.

SoftHSM2 (Debian package `softhsm2`, installed by scripts/setup.sh) reads its
configuration file from `SOFTHSM2_CONF` when the library is initialised, and
keeps tokens as files under the configured directory. So a token for a test
or a local stack is a config file plus a token directory, made here with
`softhsm2-util`; `activate()` points this process's library at it.

The PINs pass on the `softhsm2-util` command line, visible to local users
for an instant: acceptable for a development token, which is all this is.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pkcs11

from v2c.contract.errors import ConfigurationError
from v2c.handlers.signing.pkcs11 import Pkcs11Config, forget_login

LIBRARY_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)
_INSTALL_HINT = "install the Debian package softhsm2 (scripts/setup.sh does)"


def find_softhsm_library() -> Path:
    """The SoftHSM2 PKCS#11 library, or a `ConfigurationError` saying how to get it."""
    override = os.environ.get("V2C_SOFTHSM2_LIBRARY")
    for candidate in (override, *LIBRARY_CANDIDATES):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise ConfigurationError(f"SoftHSM2's libsofthsm2.so not found: {_INSTALL_HINT}")


def find_softhsm_util() -> Path:
    found = shutil.which("softhsm2-util")
    if found is None:
        raise ConfigurationError(f"softhsm2-util not found: {_INSTALL_HINT}")
    return Path(found)


@dataclass(frozen=True)
class SoftHsmToken:
    """An initialised token: its config file, library and PINs."""

    conf_file: Path
    library_path: Path
    label: str
    user_pin: str = field(repr=False)

    def activate(self) -> None:
        """Point this process's SoftHSM2 library at this token's config.

        The library reads `SOFTHSM2_CONF` at initialisation only; when it is
        already loaded (another token earlier in the process) it is
        re-initialised, which closes every open session of it.
        """
        os.environ["SOFTHSM2_CONF"] = str(self.conf_file)
        forget_login()  # re-initialising invalidates every session, logins included
        lib = pkcs11.lib(str(self.library_path))  # cached per library path
        lib.reinitialize()

    def pkcs11_config(self, key_label: str) -> Pkcs11Config:
        return Pkcs11Config(
            library_path=str(self.library_path),
            token_label=self.label,
            key_label=key_label,
            user_pin=self.user_pin,
        )


def init_softhsm_token(
    root: Path, *, label: str = "v2c", so_pin: str, user_pin: str
) -> SoftHsmToken:
    """Create `root/softhsm2.conf` and a token labelled `label` under
    `root/tokens`, unless that token exists already (then reuse it)."""
    library = find_softhsm_library()
    util = find_softhsm_util()
    tokens = root / "tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    conf = root / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\n"
        "objectstore.backend = file\n"
        "log.level = ERROR\n"
        "slots.removable = false\n"
    )
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    token = SoftHsmToken(conf, library, label, user_pin)
    shown = subprocess.run(
        [str(util), "--show-slots"], env=env, capture_output=True, text=True, check=False
    )
    if _has_label(shown.stdout, label):
        return token
    done = subprocess.run(
        [
            str(util),
            "--init-token",
            "--free",
            "--label",
            label,
            "--so-pin",
            so_pin,
            "--pin",
            user_pin,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise ConfigurationError(
            f"softhsm2-util --init-token failed ({done.returncode}): "
            f"{(done.stderr or done.stdout).strip()}"
        )
    return token


def _has_label(show_slots: str, label: str) -> bool:
    for line in show_slots.splitlines():
        name, sep, value = line.strip().partition(":")
        if sep and name.strip() == "Label" and value.strip() == label:
            return True
    return False
