"""Two gateway processes on one share keep counters exact (issue #13, acceptance).

Two `v2c gateway run` processes with the production rules subscribe to the
same shared subscription on one real mosquitto; the production `ota_status`
handler in each ingests its batches into the one real moto server. A canary
campaign (a gated canary wave, then the rollout wave) is reported on by its
vehicles over MQTT: every vehicle's seven reports, some out of order, some
twice with the copy right behind the original, so the broker hands the two
copies to different gateways and both decide on the same record at once
(one transaction wins, the other is cancelled on that record, reads it again
and finds a duplicate).

At the end the campaign's counters and each wave's, as stored, equal the
records' states counted in DynamoDB, nothing was dead-lettered, each process
handled a share of the reports and applied some, and transactions were
cancelled on records another writer (the other process, or another batch of
the same one) had moved: writers really did race. (The gateways reach moto
through `aws_faults.AwsFaultProxy` without faults, which counts the answers.)

The test process plays the API's periodic campaign monitor (every poll
instead of every minute): a reaction that finds the other gateway holding
the campaign's lease leaves the next step to the next report or the monitor
(ADR 0005), and after the canary's last report there is no next report.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aws_faults import TRANSACT_WRITE, AwsFaultProxy
from fleet_support import upload_firmware, wait_progressing
from gateway_support import GatewayProcess, gateway_process, publish_from_clients, wait_until
from ota_support import fleet
from status_support import (
    assert_counters_exact,
    campaign_side,
    records,
    report_messages,
    start_campaign,
    terminal_count,
)

from v2c.contract.mqtt_endpoint import MqttEndpoint
from v2c.handlers.ota.config import OtaServices
from v2c.handlers.ota.domain.lifecycle import CampaignStatus
from v2c.infra.local.broker import MosquittoBroker

if TYPE_CHECKING:
    from moto_fixtures import AwsStack

VEHICLES = 50
CANARY = 10
MODEL = "Accord"


def rolls_back(vehicle: str) -> bool:
    """One rollout vehicle in eight ends ROLLED_BACK (the canary all complete)."""
    return int(vehicle[-6:]) % 8 == 5


def via(relay: AwsFaultProxy, client_id: str) -> dict[str, Any]:
    """A gateway's arguments: its id, and AWS through `relay` (which counts the answers)."""
    return {"client_id": client_id, "environment": {"AWS_ENDPOINT_URL": relay.endpoint_url}}


def handled(gateway: GatewayProcess) -> float:
    return gateway.metric("v2c_gateway_messages_handled_total", rule="ota_status")


def test_two_gateways_on_one_share_keep_counters_exact(
    aws_stack: AwsStack,
    mosquitto: MosquittoBroker,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    endpoint = MqttEndpoint(mosquitto.host, mosquitto.port)
    settings = aws_stack.settings()
    with campaign_side(aws_stack, monkeypatch) as ota:
        ota.deps.fleet.put(fleet(VEHICLES, model=MODEL))
        firmware_id = upload_firmware(ota, "2.0.0", model=MODEL, image_bytes=4096)
        with (
            AwsFaultProxy(aws_stack.aws.endpoint_url or "") as relay,  # no faults: it counts
            gateway_process(endpoint, settings, tmp_path / "gw-a.log", **via(relay, "gw-a")) as a,
            gateway_process(endpoint, settings, tmp_path / "gw-b.log", **via(relay, "gw-b")) as b,
        ):
            campaign_id = start_campaign(
                ota,
                firmware_id,
                MODEL,
                deployment_strategy="canary",
                canary_size=CANARY,
                batch_size=VEHICLES,
                max_concurrent_updates=VEHICLES,
            )
            canary = records(ota, campaign_id)
            assert len(canary) == CANARY

            # The canary reports; its gate passes and the rollout wave is notified.
            sent = report_messages(canary, lambda _vehicle: False, seed=1)
            publish_from_clients(endpoint, sent, prefix="canary")
            _wait(ota, campaign_id, lambda: len(records(ota, campaign_id)) == VEHICLES, "rollout")
            rollout = [u for u in records(ota, campaign_id) if u.wave == 1]
            assert len(rollout) == VEHICLES - CANARY

            # The rollout reports, and the campaign finishes.
            messages = report_messages(rollout, rolls_back, seed=2)
            publish_from_clients(endpoint, messages, prefix="rollout")
            sent += messages

            def finished() -> bool:
                # Every message handled (none lost, none twice): the records can all
                # be terminal while stale and repeated reports are still in hand.
                return (
                    handled(a) + handled(b) == len(sent)
                    and terminal_count(ota, campaign_id) == VEHICLES
                    and ota.campaigns.get(campaign_id).status is CampaignStatus.COMPLETED
                )

            _wait(ota, campaign_id, finished, "every report handled, the campaign completed")
            # ... and by both processes.
            per_gateway = [handled(a), handled(b)]
            applied = [g.metric("v2c_ota_status_reports_total", outcome="applied") for g in (a, b)]
            failed = [g.metric("v2c_gateway_messages_failed_total") for g in (a, b)]
            dead = [g.metric("v2c_dlq_messages_total") for g in (a, b)]

        failing = sum(1 for u in rollout if rolls_back(u.vehicle_id))
        assert 0 < failing < len(rollout)
        assert_counters_exact(ota, aws_stack, campaign_id, vehicles=VEHICLES, rolled_back=failing)
        assert sum(per_gateway) == len(sent)
        assert min(per_gateway) > 0, per_gateway
        assert min(applied) > 0, applied
        # Writers did collide: transactions were cancelled on a record another had
        # moved, and their reports decided again on what it had become.
        assert relay.upstream_errors[(TRANSACT_WRITE, "TransactionCanceledException")] > 0
        assert failed == [0, 0]
        assert dead == [0, 0]
        assert ota.dead_letters.depth() == 0


def test_a_gateway_sigkilled_mid_run_and_restarted_leaves_counters_exact(
    aws_stack: AwsStack,
    mosquitto: MosquittoBroker,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One of the two is killed (SIGKILL: no drain) while the reports flow.
    The broker keeps the dead member's unacknowledged messages, and its share
    of the later ones, in its persistent session (measured: mosquitto 2.0.11
    does not hand them to the live member), so the other cannot finish alone:
    the killed gateway comes back under its client id and takes them, those
    it had in hand when it died included. Nothing is lost, nothing counted twice."""
    endpoint = MqttEndpoint(mosquitto.host, mosquitto.port)
    settings = aws_stack.settings()
    vehicles = 30
    with campaign_side(aws_stack, monkeypatch) as ota:
        ota.deps.fleet.put(fleet(vehicles, model=MODEL))
        firmware_id = upload_firmware(ota, "2.0.0", model=MODEL, image_bytes=4096)
        with gateway_process(endpoint, settings, tmp_path / "gw-a.log", client_id="gw-a") as a:
            first_b = gateway_process(endpoint, settings, tmp_path / "gw-b.log", client_id="gw-b")
            with first_b as b:
                campaign_id = start_campaign(
                    ota,
                    firmware_id,
                    MODEL,
                    deployment_strategy="immediate",
                    batch_size=vehicles,
                    max_concurrent_updates=vehicles,
                )
                messages = report_messages(records(ota, campaign_id), rolls_back, seed=3)
                publishing = _in_background(lambda: publish_from_clients(endpoint, messages))
                wait_until(
                    lambda: handled(b) >= len(messages) // 8,
                    timeout=120,
                    what="gw-b a quarter into its share",
                )
                b.kill()
                killed_after = handled(a), len(messages)
            publishing(180)
            with gateway_process(
                endpoint, settings, tmp_path / "gw-b2.log", client_id="gw-b"
            ) as b_again:
                _wait(
                    ota,
                    campaign_id,
                    settled(a, b_again, also=lambda: terminal_count(ota, campaign_id) == vehicles),
                    "every record terminal, both gateways idle",
                )
                after_restart = handled(b_again)
                failed = [g.metric("v2c_gateway_messages_failed_total") for g in (a, b_again)]

        failing = sum(1 for u in records(ota, campaign_id) if rolls_back(u.vehicle_id))
        # The campaign completes once the last report's reaction holds its lease: if the
        # killed process held it, that is when it expires (60 s), and the counters are
        # exact before. So the campaign may still be in progress here.
        assert_counters_exact(
            ota, aws_stack, campaign_id, vehicles=vehicles, rolled_back=failing, completed=False
        )
        assert after_restart > 0, (killed_after, after_restart)  # its session's messages
        assert failed == [0, 0]
        assert ota.dead_letters.depth() == 0


def settled(*gateways: GatewayProcess, also: Callable[[], bool]) -> Callable[[], bool]:
    """True once `also()` holds and the gateways had nothing in hand or waiting
    at two polls in a row: a gateway's window is empty only when the broker has
    nothing more for its session (after a restart, the handled counts cannot
    tell: those of the killed process died with it)."""
    idle_polls = [0]

    def check() -> bool:
        busy = sum(
            g.metric("v2c_gateway_in_flight") + g.metric("v2c_gateway_waiting") for g in gateways
        )
        idle_polls[0] = idle_polls[0] + 1 if busy == 0 else 0
        return idle_polls[0] >= 2 and also()

    return check


def _in_background(work: Callable[[], None]) -> Callable[[float], None]:
    """Run `work` on a thread; the returned join re-raises what it raised."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def join(timeout: float) -> None:
        thread.join(timeout)
        assert not thread.is_alive(), "still publishing"
        assert not errors, errors

    return join


def _wait(ota: OtaServices, campaign_id: str, done: Callable[[], bool], what: str) -> None:
    """Wait for `done` while the campaign moves, running the monitor each poll."""

    def monitored() -> bool:
        ota.campaigns.monitor()
        return done()

    wait_progressing(
        monitored,
        lambda: (terminal_count(ota, campaign_id), len(records(ota, campaign_id))),
        what=what,
        stall_s=60,
        cap_s=240,
    )
