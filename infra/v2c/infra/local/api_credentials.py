"""The local stack's API credentials: one per role, each a 0600 file in the stack directory.

`v2c stack up` (through `v2c api serve`) creates them once and keeps them
across restarts; `stack.json` records where they are (`api.key_files`, role
→ file; `api.key_file` is the fleet manager's, the CLI's default). The API
process is given only their SHA-256 digests (`V2C_API_KEYS`, compact form,
see `v2c.handlers.api.auth`), never the keys.

| role | principal | file |
|---|---|---|
| viewer | local-viewer | `api-viewer.key` |
| fleet_manager | local-fleet-manager | `api-fleet_manager.key` |
| approver | local-approver | `api-approver.key` |
| operator | local-operator | `api-operator.key` |

Each credential carries exactly one role, so the local stack shows the
separation a deployment has: the fleet manager creates a campaign, the
approver (another principal) approves it.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from v2c.handlers.api.roles import Role
from v2c.infra.settings import ApiSettings

KEY_BYTES: Final = 32
DEFAULT_ROLE: Final = Role.FLEET_MANAGER
PRINCIPALS: Final[dict[Role, str]] = {
    role: "local-" + role.value.replace("_", "-") for role in Role
}


def key_file_name(role: Role) -> str:
    return f"api-{role.value}.key"


def ensure_key(path: Path) -> str:
    """The key in `path`, created once (0600, random) and kept across restarts."""
    if path.exists():
        key = path.read_text().strip()
        if key:
            if path.stat().st_mode & 0o077:
                path.chmod(0o600)
            return key
    key = secrets.token_urlsafe(KEY_BYTES)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


def ensure_credentials(directory: Path) -> dict[Role, Path]:
    """One key file per role in `directory` (created when missing)."""
    files = {role: directory / key_file_name(role) for role in Role}
    for path in files.values():
        ensure_key(path)
    return files


def api_keys_value(files: Mapping[Role, Path]) -> str:
    """`V2C_API_KEYS` for these key files: principal, role and the key's digest."""
    entries = []
    for role, path in sorted(files.items()):
        digest = hashlib.sha256(path.read_text().strip().encode()).hexdigest()
        entries.append(f"{PRINCIPALS[role]}:{role.value}:sha256:{digest}")
    return ",".join(entries)


def api_settings(url: str, directory: Path) -> ApiSettings:
    """`stack.json`'s `api` section for an API at `url` with its keys in `directory`."""
    files = {role.value: directory / key_file_name(role) for role in Role}
    return ApiSettings(url=url, key_file=files[DEFAULT_ROLE.value], key_files=files)
