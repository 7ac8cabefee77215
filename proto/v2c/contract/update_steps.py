"""Pre- and post-update steps (BR-OTA-027): the vocabulary both sides share.

A signed manifest may ask the vehicle to do a few named things around an
installation (stop a service before the slot is written, restart it after
the commit). It names *actions* from this fixed list, never code: the cloud
refuses a campaign naming anything else with a 400, and a vehicle refuses a
manifest naming anything else before downloading (it could not honour what
was signed). Both read the list here, so they cannot disagree about it.
"""

from __future__ import annotations

import re
from typing import Final

ALLOWED_ACTIONS: Final = frozenset(
    {"stop_service", "backup_config", "clear_cache", "restart_service", "notify_driver"}
)
# A manifest is small (the signature covers it whole); a long list is a mistake.
MAX_STEPS: Final = 16
MAX_ARGUMENT_CHARS: Final = 128
# A service name or a configuration key: no spaces, no shell, no paths upwards.
ARGUMENT_PATTERN: Final = re.compile(r"^[A-Za-z0-9_.:@-]{0,128}$")
