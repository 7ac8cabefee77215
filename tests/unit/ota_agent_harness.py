"""A pure harness around `UpdateAgent` for the agent's unit tests.

It signs real notifications with a software key, plays the ports (downloader,
installer, bootloader) by hand, and feeds every report the agent emits,
as it is emitted, to the cloud's own state machine
(`update_state.apply_status`), with the cloud commands the scenario implies
(notify, cancel, retry). `cloud_refusals` lists every report the cloud would
refuse as illegal (INVALID) or out of order (STALE); the fixture in each
test module asserts it is empty after every test.

Reports about notifications that failed verification go the way the status
ingest sends them: never applied, unless their `notification_sha256` is the
digest of what this harness's cloud sent for the update (`notify`), in which
case `apply_confirmed_rejection`. `forge` delivers a notification the cloud
never sent.

Commands (`command`, `send_command`) are signed by the same key, as the
cloud's `sign_command` signs them; sending a CANCEL_UPDATE or ROLL_BACK
first applies the cloud's own cancel to its record, as the cloud does before
it tells the vehicle. Update steps are given as (action, argument) pairs.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cache
from typing import Any, TypeVar

from google.protobuf.message import DecodeError
from signing_helpers import T0, make_manifest

from v2c.contract.keyset import TrustedKey, TrustedKeySet
from v2c.contract.notification import signed_part_sha256
from v2c.handlers.ota.domain.update_state import (
    Command,
    Outcome,
    UpdateRecord,
    UpdateState,
    apply_command,
    apply_confirmed_rejection,
    apply_status,
)
from v2c.handlers.signing.command import sign_command
from v2c.handlers.signing.manifest import sign_manifest
from v2c.handlers.signing.software import SoftwareSigner
from v2c.v1.command_pb2 import OTACommand, OTACommandEnvelope
from v2c.v1.ota_pb2 import OTAManifest, OTAStatus, OTAUpdateAvailable, UpdateStep
from v2c.vehicle_sim.ota.agent import UpdateAgent
from v2c.vehicle_sim.ota.agent.checks import AgentPolicy
from v2c.vehicle_sim.ota.agent.effects import (
    BootResult,
    Effect,
    InstallStep,
    Report,
    SaveState,
    StepStage,
)
from v2c.vehicle_sim.ota.agent.vehicle_state import VehicleConditions

VIN = "VIN-1HGBH41JXMN109186"
MIB = 1024 * 1024
SIZE = 50 * MIB
T0_MS = int(T0.timestamp() * 1000) + 24 * 3600 * 1000  # a day into the key's window
DAY_MS = 24 * 3600 * 1000
URL = "https://updates.example/pkg?X-Amz-Signature=abc"
S = OTAStatus
E = TypeVar("E")
FAILED_COUNTERS = frozenset({UpdateState.FAILED, UpdateState.REJECTED})
STEP_FIELDS = ("pre_update_steps", "post_update_steps")
STOPPING = frozenset({OTACommand.Kind.CANCEL_UPDATE, OTACommand.Kind.ROLL_BACK})


@cache
def signer() -> SoftwareSigner:
    return SoftwareSigner.generate()


@cache
def other_signer() -> SoftwareSigner:
    return SoftwareSigner.generate()


def trusted_keys() -> TrustedKeySet:
    return TrustedKeySet([TrustedKey.from_pem(signer().public_key_pem(), T0 - timedelta(days=1))])


def good_conditions(**changes: Any) -> VehicleConditions:
    base = VehicleConditions(
        installed_version="2.4.1",
        model="Accord",
        hardware_id="HW-7",
        free_storage_bytes=2 * SIZE + 200 * MIB,
        battery_percent=85,
    )
    return base.with_(**changes)


def state_name(status: OTAStatus) -> str:
    return S.State.Name(status.state)


def reason_name(status: OTAStatus) -> str:
    return S.Reason.Name(status.reason)


@dataclass
class Refusal:
    update_id: str
    state: str
    sequence: int
    outcome: Outcome
    why: str


@dataclass
class Harness:
    policy: AgentPolicy = field(default_factory=AgentPolicy)
    now: int = T0_MS
    conditions: VehicleConditions = field(default_factory=good_conditions)
    effects: list[Effect] = field(default_factory=list)
    cloud: dict[str, UpdateRecord] = field(default_factory=dict)
    cloud_refusals: list[Refusal] = field(default_factory=list)
    last_sequence: dict[str, int] = field(default_factory=dict)
    saved: dict[str, Any] | None = None
    sent_digests: dict[str, set[bytes]] = field(default_factory=dict)  # what the cloud sent
    unverified: list[tuple[OTAStatus, Outcome]] = field(default_factory=list)
    unverified_sequence: int = 0

    def __post_init__(self) -> None:
        self.agent = UpdateAgent(VIN, trusted_keys(), policy=self.policy)

    # -- building notifications ------------------------------------------

    def notification(
        self,
        *,
        url: str = URL,
        message_id: bytes | None = None,
        sign_with: SoftwareSigner | None = None,
        **overrides: Any,
    ) -> OTAUpdateAvailable:
        fields: dict[str, Any] = {
            "update_id": "upd-1",
            "version": "2.5.0",
            "size_bytes": SIZE,
            "min_battery_level": 30,
            "expires_at": self.now + 30 * DAY_MS,
            "target_model": "Accord",
            "target_hardware_id": "HW-7",
        }
        fields.update(overrides)
        for name in STEP_FIELDS:  # hashable for the signing cache
            if name in fields:
                fields[name] = tuple(tuple(step) for step in fields[name])
        signed = OTAUpdateAvailable()
        signed.CopyFrom(_signed(sign_with or signer(), tuple(sorted(fields.items()))))
        signed.header.message_id = message_id or uuid.uuid4().bytes
        signed.header.timestamp = self.now
        signed.download_url = url
        return signed

    def command(
        self,
        kind: OTACommand.Kind.ValueType = OTACommand.Kind.CANCEL_UPDATE,
        *,
        sign_with: SoftwareSigner | None = None,
        **overrides: Any,
    ) -> OTACommandEnvelope:
        """A signed command, valid for a day, as the cloud sends it."""
        fields: dict[str, Any] = {
            "command_id": uuid.uuid4().hex,
            "kind": kind,
            "campaign_id": "camp-1",
            "update_id": "upd-1",
            "reason": "bad build found",
            "issued_at": self.now,
            "expires_at": self.now + DAY_MS,
        }
        fields.update(overrides)
        envelope = sign_command(sign_with or signer(), OTACommand(**fields))
        envelope.header.message_id = uuid.uuid4().bytes
        envelope.header.correlation_id = fields["command_id"]
        envelope.header.timestamp = self.now
        return envelope

    # -- events --------------------------------------------------------------

    def notify(self, notification: OTAUpdateAvailable | None = None, **kw: Any) -> list[Effect]:
        n = notification if notification is not None else self.notification(**kw)
        self.cloud_sends(n)
        return self._take(
            self.agent.on_notification(n.SerializeToString(), self.conditions, self.now)
        )

    def cloud_sends(self, n: OTAUpdateAvailable) -> None:
        """The cloud records `n` as sent (still on its way to the vehicle)."""
        peek_id = _peek_update_id(n)
        if peek_id:
            self._command(peek_id, Command.NOTIFY, retry_first=True)
            digest = signed_part_sha256(n.manifest, n.signature, n.key_id)
            self.sent_digests.setdefault(peek_id, set()).add(digest)

    def send_command(self, envelope: OTACommandEnvelope | None = None, **kw: Any) -> list[Effect]:
        """The cloud decides (a cancel moves its record first) and publishes
        the command; the vehicle receives it."""
        envelope = envelope if envelope is not None else self.command(**kw)
        command = OTACommand.FromString(envelope.command)
        if command.kind in STOPPING and command.update_id:
            self._command(command.update_id, Command.CANCEL)
        return self.deliver_command(envelope)

    def deliver_command(self, envelope: OTACommandEnvelope) -> list[Effect]:
        """The transport hands the vehicle a command (no cloud action)."""
        payload = envelope.SerializeToString()
        return self._take(self.agent.on_command(payload, self.now))

    def forge(self, notification: OTAUpdateAvailable) -> list[Effect]:
        """A notification the cloud never sent reaches the vehicle (no cloud action)."""
        payload = notification.SerializeToString()
        return self._take(self.agent.on_notification(payload, self.conditions, self.now))

    def redeliver(self, notification: OTAUpdateAvailable) -> list[Effect]:
        """The transport delivers a notification again (no cloud action)."""
        payload = notification.SerializeToString()
        return self._take(self.agent.on_notification(payload, self.conditions, self.now))

    def cloud_times_out(self, update_id: str) -> None:
        """BR-OTA-022: the cloud gives up on an update it has not heard finish."""
        self._command(update_id, Command.TIME_OUT)

    def set(self, **changes: Any) -> list[Effect]:
        self.conditions = self.conditions.with_(**changes)
        return self._take(self.agent.on_conditions_changed(self.conditions, self.now))

    def advance(self, ms: int, *, polled: VehicleConditions | None = None) -> list[Effect]:
        """Time passes; `polled`: a polling runtime hands the conditions to the tick."""
        self.now += ms
        if polled is not None:
            self.conditions = polled
        return self._take(self.agent.on_tick(self.now, polled))

    def cancel(self, update_id: str = "upd-1") -> list[Effect]:
        self._command(update_id, Command.CANCEL)
        return self._take(self.agent.on_cancel(update_id, self.now))

    def progress(self, update_id: str, done: int) -> list[Effect]:
        return self._take(self.agent.on_download_progress(update_id, done, self.now))

    def download(
        self,
        update_id: str = "upd-1",
        *,
        chunk: int = MIB,
        ms_per_chunk: int = 8000,
        start: int = 0,
        size: int = SIZE,
    ) -> list[Effect]:
        out: list[Effect] = []
        done = start
        while done < size:
            done = min(size, done + chunk)
            self.now += ms_per_chunk
            out += self.progress(update_id, done)
        out += self._take(self.agent.on_download_finished(update_id, self.now))
        return out

    def paused(self, done: int, detail: str = "", update_id: str = "upd-1") -> list[Effect]:
        return self._take(self.agent.on_download_paused(update_id, done, self.now, detail))

    def resumed(self, update_id: str = "upd-1") -> list[Effect]:
        return self._take(self.agent.on_download_resumed(update_id, self.now))

    def finished(self, update_id: str = "upd-1", **kw: Any) -> list[Effect]:
        return self._take(self.agent.on_download_finished(update_id, self.now, **kw))

    def step(self, step: InstallStep, update_id: str = "upd-1") -> list[Effect]:
        return self._take(self.agent.on_install_step(update_id, step, self.now))

    def installed(self, update_id: str = "upd-1", **kw: Any) -> list[Effect]:
        return self._take(self.agent.on_install_finished(update_id, self.now, **kw))

    def install(self, update_id: str = "upd-1", *, ms_per_step: int = 60_000) -> list[Effect]:
        out: list[Effect] = []
        for step in InstallStep:
            self.now += ms_per_step
            out += self._take(self.agent.on_install_step(update_id, step, self.now))
        out += self._take(self.agent.on_install_finished(update_id, self.now))
        return out

    def update_step(
        self,
        stage: StepStage,
        index: int,
        *,
        ok: bool = True,
        detail: str = "",
        update_id: str = "upd-1",
    ) -> list[Effect]:
        self.now += 1000
        return self._take(
            self.agent.on_update_step(update_id, stage, index, self.now, ok=ok, detail=detail)
        )

    def boot(
        self,
        running: str,
        *,
        trial: bool = False,
        fell_back: bool = False,
        attempts: int = 0,
        ms: int = 60_000,
    ) -> list[Effect]:
        self.now += ms
        result = BootResult(running, trial=trial, fell_back=fell_back, boot_attempts=attempts)
        return self._take(self.agent.on_boot_result(result, self.now))

    def verify(self, update_id: str = "upd-1", *, ok: bool = True) -> list[Effect]:
        self.now += 12_000
        return self._take(self.agent.on_verification(update_id, self.now, ok=ok))

    def commit(self, update_id: str = "upd-1") -> list[Effect]:
        return self._take(self.agent.on_committed(update_id, self.now))

    def restart(self, boot: BootResult | None = None, *, ms: int = 1000) -> list[Effect]:
        """A power cut: a new agent from the last saved JSON, then `on_start`."""
        self.now += ms
        self.agent = UpdateAgent(VIN, trusted_keys(), policy=self.policy)
        if self.saved is not None:
            self.agent.restore(json.loads(json.dumps(self.saved)))
        running = boot or BootResult(self.conditions.installed_version)
        return self._take(self.agent.on_start(self.conditions, running, self.now))

    # -- what happened -------------------------------------------------------

    def reports(
        self, update_id: str | None = None, *, redeliveries: bool = False
    ) -> list[OTAStatus]:
        """The reports in emission order; re-sends after a restart only if asked."""
        return [
            e.status
            for e in self.effects
            if isinstance(e, Report)
            and (update_id is None or e.update_id == update_id)
            and (redeliveries or not e.redelivery)
        ]

    def states(self, update_id: str = "upd-1") -> list[str]:
        return [state_name(s) for s in self.reports(update_id)]

    def last(self, update_id: str = "upd-1") -> OTAStatus:
        return self.reports(update_id)[-1]

    # -- the cloud's view ----------------------------------------------------

    def _command(self, update_id: str, command: Command, *, retry_first: bool = False) -> None:
        record = self.cloud.get(update_id, UpdateRecord())
        if retry_first and record.state in FAILED_COUNTERS:
            record = apply_command(record, Command.RETRY, max_retries=1000).after
        self.cloud[update_id] = apply_command(record, command).after

    def _take(self, effects: list[Effect]) -> list[Effect]:
        if effects:
            assert isinstance(effects[0], SaveState), (
                "a non-empty effect list starts with SaveState"
            )
            assert not any(isinstance(e, SaveState) for e in effects[1:])
            self.saved = effects[0].state
        for effect in effects:
            if isinstance(effect, Report):
                self._to_cloud(effect)
        self.effects += effects
        return effects

    def _to_cloud(self, report: Report) -> None:
        status = report.status
        uid = status.update_id
        if status.notification_unverified:
            self._unverified_to_cloud(report)
            return
        previous = self.last_sequence.get(uid, 0)
        if report.redelivery:
            assert status.sequence <= previous
        else:
            assert status.sequence == previous + 1, (uid, status.sequence, previous)
            self.last_sequence[uid] = status.sequence
        record = self.cloud.get(uid, UpdateRecord())
        transition = apply_status(record, status)
        if transition.outcome in (Outcome.INVALID, Outcome.STALE) or (
            transition.outcome is Outcome.DUPLICATE and not report.redelivery
        ):
            self.cloud_refusals.append(
                Refusal(
                    uid, state_name(status), status.sequence, transition.outcome, transition.reason
                )
            )
        self.cloud[uid] = transition.after

    def _unverified_to_cloud(self, report: Report) -> None:
        """As the status ingest: numbered apart, applied only when the cloud
        recognises its own notification in `notification_sha256`."""
        status = report.status
        assert not report.redelivery
        assert status.sequence == self.unverified_sequence + 1
        self.unverified_sequence = status.sequence
        uid = status.update_id
        record = self.cloud.get(uid)
        if record is None:
            self.unverified.append((status, Outcome.UNVERIFIED))
            return
        if status.notification_sha256 in self.sent_digests.get(uid, set()):
            transition = apply_confirmed_rejection(record)
        else:
            transition = apply_status(record, status)
            assert transition.outcome is Outcome.UNVERIFIED
        self.unverified.append((status, transition.outcome))
        self.cloud[uid] = transition.after


@cache
def _signed(by: SoftwareSigner, fields: tuple[tuple[str, Any], ...]) -> OTAUpdateAvailable:
    """Signing costs ~2 ms through the `Signer` machinery: sign each manifest once."""
    values = dict(fields)
    for name in STEP_FIELDS:
        if name in values:
            values[name] = [UpdateStep(action=a, argument=arg) for a, arg in values[name]]
    return sign_manifest(by, make_manifest(**values))


def _peek_update_id(n: OTAUpdateAvailable) -> str:
    try:
        return OTAManifest.FromString(n.manifest).update_id
    except DecodeError:
        return ""


def of_type(effects: list[Effect], kind: type[E]) -> list[E]:
    return [e for e in effects if isinstance(e, kind)]
