"""Who a simulated vehicle is and every knob of its OTA runtime.

Kept apart from the runtime so the fleet simulator, the CLI and the tests
can describe a vehicle without importing the event loop machinery.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from cryptography.hazmat.primitives.asymmetric import ec

from v2c.contract.keyset import TrustedKey, TrustedKeySet
from v2c.contract.topics import Domain, Topic
from v2c.vehicle_sim.backoff import BackoffPolicy
from v2c.vehicle_sim.ota.agent.checks import AgentPolicy
from v2c.vehicle_sim.ota.device.download import DownloadConfig
from v2c.vehicle_sim.ota.device.faults import SignatureInvalid, VehicleFaults
from v2c.vehicle_sim.ota.device.installer import InstallTimings
from v2c.vehicle_sim.ota.device.vehicle_model import ConditionsPlan


@dataclass(frozen=True, slots=True)
class VehicleSpec:
    """Who the vehicle is. `installed_version` only provisions a new flash:
    afterwards the flash says what runs."""

    vehicle_id: str
    model: str
    region: str
    installed_version: str = "1.0.0"
    hardware_id: str = ""
    faults: VehicleFaults = field(default_factory=VehicleFaults)

    def topic(self, kind: str) -> str:
        return str(Topic(self.region, self.vehicle_id, Domain.OTA, kind))

    def command_topic(self) -> str:
        """Where the cloud's signed commands (cancel, roll back, status) arrive."""
        return str(Topic(self.region, self.vehicle_id, Domain.COMMANDS, "request"))

    def key_store(self, trusted: TrustedKeySet) -> TrustedKeySet:
        """The keys the vehicle's store holds. With the `signature_invalid`
        fault, a wrong public key under each trusted id, so every genuine
        signature (manifest or command) fails."""
        if not self.faults.get(SignatureInvalid):
            return trusted
        keys = []
        for key in trusted:
            wrong = ec.generate_private_key(ec.SECP256R1()).public_key()
            keys.append(TrustedKey(key.key_id, wrong, key.valid_from, key.valid_until))
        return TrustedKeySet(keys)


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    """Every knob of a vehicle runtime (simulated seconds unless named real)."""

    policy: AgentPolicy = field(default_factory=AgentPolicy)
    durable: bool = False  # fsync flash, agent state and downloads (slow; tests of power loss)
    min_download_timeout_real_s: float = 120.0
    # The downloader's minimum progress (real seconds: the network runs in real
    # time): fewer bytes in a window fails the download DOWNLOAD_TIMEOUT and
    # frees the update slot long before the overall deadline.
    min_progress_bytes: int = 4096
    min_progress_window_real_s: float = 60.0
    # Between download attempts after PAUSED (simulated seconds, then jitter).
    resume_backoff: BackoffPolicy = field(
        default_factory=lambda: BackoffPolicy(initial_s=30.0, max_s=600.0)
    )
    conditions: ConditionsPlan = field(default_factory=ConditionsPlan)
    timings: InstallTimings | None = None
    factory_image_bytes: int = 4096
    keep_reports: bool = False  # keep every report (tests); else the last one only
    # The pre/post-update actions (BR-OTA-027) that fail on this vehicle: the
    # runtime simulates the allowed actions as instant steps, these fail.
    failing_update_steps: frozenset[str] = frozenset()

    def agent_policy(self, scale: float) -> AgentPolicy:
        """The agent's policy, its download deadline stretched to real time."""
        floor = math.ceil(self.min_download_timeout_real_s / scale)
        return replace(self.policy, download_timeout_s=max(self.policy.download_timeout_s, floor))

    def download_config(self, scale: float) -> DownloadConfig:
        """The downloader's limits: its retry waits scale with simulated time
        (2 s simulated, at least 50 ms real), its timeouts are real."""
        return DownloadConfig(
            backoff=BackoffPolicy(initial_s=max(0.05, 2.0 * scale), max_s=max(0.5, 30.0 * scale)),
            overall_timeout_s=max(self.min_download_timeout_real_s, 3600.0 * scale),
            min_progress_bytes=self.min_progress_bytes,
            min_progress_window_s=self.min_progress_window_real_s,
            fsync=self.durable,
        )
