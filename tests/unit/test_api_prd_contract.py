"""The PRD's contract points without I/O: the multipart upload, fleet and firmware
statistics, a vehicle's history, the domain events' payloads, and beta opt-in."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any, cast

import pytest
from api_events import AUTH, KEY_ENTRY, call
from ota_service_harness import MODEL, TO_COMPLETION, Ota, S, fleet, vin
from test_api_firmware_routes import QUERY, FakeFirmware, lambda_app, lambda_upload

from v2c.contract.errors import InvalidField, InvalidInput, V2CError
from v2c.handlers.api import ApiAuth, ApiServices, build_app
from v2c.handlers.api.device_history import history_answer
from v2c.handlers.api.errors import v2c_error_response
from v2c.handlers.api.firmware_form import FormReader, MalformedForm, form_boundary
from v2c.handlers.api.firmware_models import FIRMWARE_PATH, INLINE_MAX_BYTES
from v2c.handlers.api.pagination import InvalidCursor
from v2c.handlers.api.routes import campaigns as campaign_routes
from v2c.handlers.ota.campaigns.targeting import BETA_EXCLUDED, beta_gate
from v2c.handlers.ota.domain.campaign_run import Eligibility
from v2c.handlers.ota.domain.plan import Target
from v2c.handlers.ota.domain.update_state import UpdateState
from v2c.handlers.ota.events import iso_ms
from v2c.handlers.ota.firmware import FirmwareService
from v2c.handlers.ota.firmware.uploads import _uploaded_detail
from v2c.handlers.ota.fleet import Vehicle
from v2c.handlers.ota.in_memory_ports import InMemoryFleet
from v2c.handlers.ota.ports import Package
from v2c.handlers.ota.stats import StatsService
from v2c.handlers.ota.update_summary import DAY_MS, PackageFacts, UpdateSummary
from v2c.handlers.ota.updates.history import history_page
from v2c.handlers.ota.updates.record import UpdateKind, VehicleUpdate
from v2c.handlers.ota.updates.scan import ScanOutcome
from v2c.infra.local.firmware_streaming import firmware_streaming_routes
from v2c.infra.local.http_adapter import PRINCIPAL_HEADER

BOUNDARY = "----v2c-test-boundary-7MA4YWxkTrZu0gW"
FORM = f"multipart/form-data; boundary={BOUNDARY}"
PACKAGE = b"\x7fELF" + bytes(range(256)) * 40 + b"\r\n--not-the-boundary\r\n" + b"tail"
META = {k: v for k, v in QUERY.items() if k != "filename"}

# -- the multipart upload (E1-US1) ----------------------------------------------


def form(
    *parts: tuple[str, bytes, str | None], boundary: str = BOUNDARY, close: bool = True
) -> bytes:
    """A multipart/form-data body as curl -F writes it."""
    out = b""
    for name, data, filename in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        kind = "application/octet-stream" if filename is not None else "text/plain"
        out += (
            (
                f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
                f"Content-Type: {kind}\r\n\r\n"
            ).encode()
            + data
            + b"\r\n"
        )
    return out + (f"--{boundary}--\r\n".encode() if close else b"")


def prd_form(metadata: dict[str, Any] | None = None, data: bytes = PACKAGE) -> bytes:
    return form(
        ("metadata", json.dumps(metadata or META).encode(), None),
        ("file", data, "firmware_v2.1.0.bin"),
    )


def streamed(fake: FakeFirmware, body: bytes, content_type: str = FORM) -> tuple[int, Any]:
    route = firmware_streaming_routes(cast(FirmwareService, fake))[("POST", FIRMWARE_PATH)]
    headers = {"Content-Type": content_type, PRINCIPAL_HEADER: "tester"}
    try:
        return route(io.BytesIO(body), len(body), headers)
    except V2CError as error:  # what the adapter does with a route's V2CError
        response = v2c_error_response(error)
        return response.status_code, json.loads(str(response.body))


def test_the_prds_form_registers_the_file_in_both_forms_of_the_api() -> None:
    lambda_fake, streamed_fake = FakeFirmware(), FakeFirmware()
    body = prd_form({**META, "checksum_sha256": hashlib.sha256(PACKAGE).hexdigest()})
    first = lambda_upload(lambda_app(lambda_fake), {}, body, FORM)
    assert first == streamed(streamed_fake, body)
    status, answer = first
    assert status == 201
    assert (answer["filename"], answer["file_size"]) == ("firmware_v2.1.0.bin", len(PACKAGE))
    call_ = lambda_fake.calls[0]
    assert call_["data"] == PACKAGE  # the boundary-like bytes inside the file are kept
    assert call_["provided_sha256"] == hashlib.sha256(PACKAGE).hexdigest()
    assert call_["metadata"]["name"] == META["name"]
    assert "checksum_sha256" not in call_["metadata"]
    assert lambda_upload(lambda_app(lambda_fake), {}, body, FORM)[0] == 200  # already there


def test_checksums_may_come_as_parts_of_their_own_and_filename_in_metadata() -> None:
    fake = FakeFirmware()
    md5 = hashlib.md5(PACKAGE).hexdigest()
    body = form(
        ("metadata", json.dumps({**META, "filename": "tcu.zip"}).encode(), None),
        ("checksum_md5", md5.encode(), None),
        ("file", PACKAGE, "C:\\builds\\ignored.bin"),
    )
    status, answer = streamed(fake, body)
    assert (status, answer["filename"]) == (201, "tcu.zip")
    assert fake.calls[0]["provided_md5"] == md5


@pytest.mark.parametrize(
    ("body", "content_type", "words"),
    [
        (prd_form(), "multipart/form-data; boundary=", "boundary"),
        (form(("file", PACKAGE, "a.bin"), ("metadata", b"{}", None)), FORM, "before"),
        (form(("metadata", json.dumps(META).encode(), None)), FORM, "no 'file' part"),
        (prd_form()[:-40], FORM, "closing boundary"),  # cut inside the file
        (prd_form()[: -len(f"--{BOUNDARY}--\r\n")], FORM, "closing boundary"),
        (
            form(
                ("metadata", json.dumps(META).encode(), None),
                ("file", PACKAGE, "a.bin"),
                ("extra", b"x", None),
            ),
            FORM,
            "last",
        ),
        (form(("notes", b"x", None), ("file", PACKAGE, "a.bin")), FORM, "unknown form part"),
        (
            form(("metadata", b"{}", None), ("metadata", b"{}", None), ("file", b"x", "a.bin")),
            FORM,
            "twice",
        ),
        (form(("metadata", b"[1]", None), ("file", PACKAGE, "a.bin")), FORM, "JSON object"),
        (form(("metadata", b"{nope", None), ("file", PACKAGE, "a.bin")), FORM, "JSON"),
        (b"no boundary anywhere in here", FORM, "boundary"),
        (
            f"--{BOUNDARY}\r\nContent-Type: text/plain\r\n\r\nx\r\n--{BOUNDARY}--\r\n".encode(),
            FORM,
            "form-data",
        ),
    ],
)
def test_a_malformed_form_is_400_with_a_json_detail_and_nothing_stored(
    body: bytes, content_type: str, words: str
) -> None:
    lambda_fake, streamed_fake = FakeFirmware(), FakeFirmware()
    for status, answer in (
        lambda_upload(lambda_app(lambda_fake), {}, body, content_type),
        streamed(streamed_fake, body, content_type),
    ):
        assert status == 400, answer
        assert words in answer["detail"]
    # refused before, or while, the registry read the package: it recorded nothing
    assert lambda_fake.calls == []
    assert streamed_fake.calls == []


def test_bad_metadata_fields_are_a_400_naming_each_under_body_metadata() -> None:
    fake = FakeFirmware()
    body = prd_form({**META, "version": "2.1", "colour": "red"})
    status, answer = lambda_upload(lambda_app(fake), {}, body, FORM)
    assert status == 400
    fields = {tuple(e["loc"]) for e in answer["errors"]}
    assert fields == {("body", "metadata", "version"), ("body", "metadata", "colour")}
    assert (status, answer) == streamed(FakeFirmware(), body)
    assert fake.calls == []


def test_behind_lambda_a_form_whose_file_is_over_4_mib_is_413() -> None:
    fake = FakeFirmware()
    status, answer = lambda_upload(
        lambda_app(fake), {}, prd_form(data=b"x" * (INLINE_MAX_BYTES + 1)), FORM
    )
    assert status == 413
    assert "firmware-uploads" in answer["detail"]
    assert (
        lambda_upload(lambda_app(fake), {}, prd_form(data=b"x" * INLINE_MAX_BYTES), FORM)[0] == 201
    )


def test_a_streamed_form_over_the_cap_is_refused_before_it_is_read() -> None:
    class Unreadable:
        def read(self, size: int = -1, /) -> bytes:
            raise AssertionError("read")

    fake = FakeFirmware()
    route = firmware_streaming_routes(cast(FirmwareService, fake))[("POST", FIRMWARE_PATH)]
    with pytest.raises(InvalidField, match="exceeds the maximum limit of 500 MB"):
        route(Unreadable(), 600 * 1024 * 1024, {"Content-Type": FORM})


class Trickle:
    """A stream that hands out at most `step` bytes a read."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data, self._step, self.reads = data, step, 0

    def read(self, size: int = -1, /) -> bytes:
        self.reads += 1
        n = self._step if size < 0 else min(size, self._step)
        chunk, self._data = self._data[:n], self._data[n:]
        return chunk


@pytest.mark.parametrize("step", [1, 7, len(BOUNDARY) + 3, 4096])
def test_the_form_reader_finds_every_boundary_whatever_the_chunking(step: int) -> None:
    reader = FormReader(Trickle(prd_form(), step), form_boundary(FORM))
    head = reader.next_part()
    assert head is not None
    assert head.name == "metadata"
    assert json.loads(reader.read_field("metadata")) == META
    head = reader.next_part()
    assert head is not None
    assert (head.name, head.filename) == ("file", "firmware_v2.1.0.bin")
    data = b"".join(iter(lambda: reader.read(1000), b""))
    assert data == PACKAGE
    assert reader.next_part() is None


def test_the_form_reader_holds_one_chunk_not_the_file() -> None:
    big = b"\x01" * (8 * 1024 * 1024)
    reader = FormReader(io.BytesIO(prd_form(data=big)), form_boundary(FORM))
    reader.next_part()
    reader.read_field("metadata")
    reader.next_part()
    total, largest = 0, 0
    while chunk := reader.read(1024 * 1024):
        total += len(chunk)
        largest = max(largest, len(reader._buffer))
    assert total == len(big)
    assert largest < 256 * 1024  # bounded by the read chunk, not the package


def test_a_metadata_part_over_its_limit_is_refused() -> None:
    body = form(("metadata", b"x" * (1024 * 1024), None), ("file", PACKAGE, "a.bin"))
    reader = FormReader(io.BytesIO(body), form_boundary(FORM))
    reader.next_part()
    with pytest.raises(MalformedForm, match="exceeds"):
        reader.read_field("metadata")


# -- statistics (E5-US1, BR-OTA-041..045, E1-US2 AC2) ---------------------------

NOW_MS = 1_900_000_000_000
HOUR = 3600 * 1000
FW_A, FW_B = "a" * 32, "b" * 32
PACKAGES = {FW_A: PackageFacts(1000, "Accord"), FW_B: PackageFacts(50, "Civic")}


def record(
    n: int,
    state: UpdateState,
    *,
    firmware: str = FW_A,
    version: str = "2.0.0",
    kind: UpdateKind = UpdateKind.CAMPAIGN,
    created: int = NOW_MS - HOUR,
    started: int = 0,
    completed: int = 0,
    vehicle: str | None = None,
) -> VehicleUpdate:
    return VehicleUpdate(
        vehicle_id=vehicle or vin(n),
        update_id=f"{n:032x}",
        kind=kind,
        firmware_id=firmware,
        to_version=version,
        campaign_id="c" * 32 if kind is UpdateKind.CAMPAIGN else "",
        state=state,
        created_at_ms=created,
        notified_at_ms=created,
        started_at_ms=started,
        completed_at_ms=completed,
        updated_at_ms=completed or created,
    )


RECORDS = [
    # completed in the window: 10 and 20 minutes from started to completed
    record(1, UpdateState.COMPLETED, started=NOW_MS - HOUR, completed=NOW_MS - 50 * 60_000),
    record(2, UpdateState.COMPLETED, started=NOW_MS - HOUR, completed=NOW_MS - 40 * 60_000),
    # completed two days ago: counts for the totals, not the last 24 h
    record(
        3,
        UpdateState.COMPLETED,
        created=NOW_MS - 3 * DAY_MS,
        started=NOW_MS - 2 * DAY_MS - 30 * 60_000,
        completed=NOW_MS - 2 * DAY_MS,
    ),
    record(4, UpdateState.FAILED, completed=NOW_MS - 30 * 60_000),  # its bytes are not counted
    record(5, UpdateState.ROLLED_BACK, firmware=FW_B, version="3.0.0", completed=NOW_MS - 1),
    record(6, UpdateState.DOWNLOADING, kind=UpdateKind.DEVICE, firmware=FW_B, version="3.0.0"),
    record(
        7,
        UpdateState.COMPLETED,
        kind=UpdateKind.DEVICE,
        firmware=FW_B,
        version="3.0.0",
        started=NOW_MS - 2 * HOUR,
        completed=NOW_MS - HOUR,
    ),
]


def test_the_summary_follows_br_ota_043_044_045() -> None:
    summary = UpdateSummary(NOW_MS, PACKAGES.get)
    for update in RECORDS:
        summary.add(update)
    figures = summary.to_json()
    assert figures["last_24h_updates"] == 6  # created in the window (all but #3)
    assert (figures["last_24h_completed"], figures["last_24h_failures"]) == (3, 2)
    assert figures["avg_update_time"] == round((10 + 20 + 30 + 60) / 4, 2)  # minutes
    assert figures["total_data_transferred"] == 1000 * 3 + 50  # completed only
    assert figures["last_24h_data_transferred"] == 1000 * 2 + 50
    by_version = figures["updates_by_firmware_version"]
    assert (by_version["2.0.0"]["completed"], by_version["2.0.0"]["failed"]) == (3, 1)
    assert by_version["2.0.0"]["success_rate"] == 75.0
    assert (by_version["3.0.0"]["rolled_back"], by_version["3.0.0"]["success_rate"]) == (1, 50.0)
    assert figures["updates_by_device_type"]["Civic"]["total"] == 3
    assert summary.outside_campaigns.in_progress == 1
    assert summary.outside_campaigns.completed == 1


class ListedRecords:
    """`UpdateRecords` over a list (what `UpdateScan` is over the table)."""

    def __init__(self, records: list[VehicleUpdate]) -> None:
        self.records = records

    def scan(
        self, visit: Callable[[VehicleUpdate], None], *, limit: int, firmware_id: str | None = None
    ) -> ScanOutcome:
        read = self.records[:limit]
        for update in read:
            if firmware_id is None or update.firmware_id == firmware_id:
                visit(update)
        return ScanOutcome(len(read), complete=len(read) == len(self.records))


def stats_over(ota: Ota, records: list[VehicleUpdate], limit: int = 1000) -> StatsService:
    for firmware, facts in PACKAGES.items():
        ota.packages.add(
            Package(firmware, "fw", "2.0.0", facts.device_model, facts.size_bytes, "0" * 64, True)
        )
    return StatsService(
        ota.campaign_store,
        ota.update_store,
        records=ListedRecords(records),
        packages=ota.packages,
        clock=lambda: NOW_MS / 1000,
        max_records=limit,
    )


def test_fleet_stats_add_updates_outside_campaigns_and_the_prd_fields() -> None:
    ota = Ota()
    ota.campaign(4)  # a created campaign: 4 pending targets in its counters
    answer = stats_over(ota, RECORDS).fleet()
    assert answer["total_campaigns"] == 1
    assert answer["pending_updates"] == 4
    # the two device updates (one in progress, one completed) count beside the campaign's
    assert (answer["in_progress_updates"], answer["completed_updates"]) == (1, 1)
    assert answer["total_updates"] == 6
    assert answer["success_rate"] == 100.0
    assert answer["last_24h_updates"] == 6
    assert answer["avg_update_time"] == 30.0
    assert (answer["records_read"], answer["records_complete"]) == (7, True)
    capped = stats_over(Ota(), RECORDS, limit=3).fleet()
    assert (capped["records_read"], capped["records_complete"]) == (3, False)


def test_a_firmwares_success_rate_counts_its_updates_in_and_outside_campaigns() -> None:
    stats = stats_over(Ota(), RECORDS)
    assert stats.firmware_success_rate(FW_A) == 75.0  # 3 completed, 1 failed
    assert stats.firmware_success_rate(FW_B) == 50.0  # 1 completed, 1 rolled back
    assert stats.firmware_success_rate("f" * 32) is None  # none finished: not 0 %
    assert (
        StatsService(Ota().campaign_store, Ota().update_store).firmware_success_rate(FW_A) is None
    )


# -- a vehicle's history (E5-US3) -----------------------------------------------

VEHICLE = vin(1)


def history() -> list[VehicleUpdate]:
    states = [
        UpdateState.COMPLETED,
        UpdateState.FAILED,
        UpdateState.COMPLETED,
        UpdateState.NOTIFIED,
    ]
    return [
        record(n, state, vehicle=VEHICLE, created=NOW_MS - (10 - n) * HOUR)
        for n, state in enumerate(states)
    ] + [record(9, UpdateState.ROLLED_BACK, vehicle=VEHICLE, created=NOW_MS - 10 * HOUR)]


def test_history_is_newest_first_paged_by_position_with_the_devices_success_rate() -> None:
    updates = history()
    first = history_page(updates, limit=2)
    assert [u.update_id for u in first.items] == [f"{3:032x}", f"{2:032x}"]
    assert first.next_position is not None
    second = history_page(updates, limit=2, after=first.next_position)
    third = history_page(updates, limit=2, after=second.next_position)
    shown = [u.created_at_ms for p in (first, second, third) for u in p.items]
    assert shown == sorted(shown, reverse=True)
    assert len(shown) == 5
    assert third.next_position is None
    # 2 completed, 1 failed, 1 rolled back (a failure), 1 in progress (outside)
    assert (first.total, first.completed, first.failed, first.success_rate) == (5, 2, 2, 50.0)
    # an update made while paging sorts first and shifts nothing of what follows
    newer = [*updates, record(20, UpdateState.NOTIFIED, vehicle=VEHICLE, created=NOW_MS)]
    assert history_page(newer, limit=2, after=first.next_position).items == second.items


def test_the_history_cursor_is_bound_to_its_vehicle() -> None:
    page, cursor, headers = history_answer(VEHICLE, history(), 2, None)
    assert cursor is not None
    assert 'rel="next"' in headers["Link"]
    again, _, _ = history_answer(VEHICLE, history(), 2, cursor)
    assert again.items[0].created_at_ms < page.items[-1].created_at_ms
    with pytest.raises(InvalidCursor):
        history_answer(vin(2), history(), 2, cursor)
    last, none, no_link = history_answer(VEHICLE, history(), 50, None)
    assert (len(last.items), none, no_link) == (5, None, {})


# -- domain events (spec 003 "Domain Events", BR-EVT-003) -----------------------

SPEC_FIELDS = {
    "firmware.uploaded": {
        "firmware_id", "name", "version", "device_model", "file_size",
        "is_security_update", "uploaded_by", "timestamp",
    },
    "campaign.created": {
        "campaign_id", "name", "firmware_id", "firmware_version", "target_device_count",
        "deployment_strategy", "priority", "created_by", "timestamp",
    },
    "campaign.started": {
        "campaign_id", "name", "firmware_id", "firmware_version", "target_device_count",
        "timestamp",
    },
    "update.cancelled": {
        "update_id", "device_id", "firmware_id", "firmware_version", "campaign_id", "timestamp",
    },
    "rollback.initiated": {
        "rollback_id", "device_id", "from_version", "to_version", "trigger", "timestamp",
    },
}  # fmt: skip


def events_of(ota: Ota, kind: str) -> list[dict[str, Any]]:
    return [detail for k, detail in ota.events.events if k == kind]


def is_iso(text: str) -> bool:
    return len(text) == 24 and text.endswith("Z") and text[10] == "T"


def test_firmware_uploaded_carries_the_spec_fields() -> None:
    fake = FakeFirmware()
    record_ = fake.upload(
        io.BytesIO(b"\x00data"), dict(META), filename="fw.bin", uploaded_by="me"
    ).record
    detail = _uploaded_detail(record_)
    assert SPEC_FIELDS["firmware.uploaded"] <= set(detail)
    assert (detail["uploaded_by"], detail["file_size"]) == ("me", 5)
    assert is_iso(detail["timestamp"])


def test_campaign_created_and_started_carry_the_spec_fields() -> None:
    ota = Ota()
    campaign_id = ota.campaign(3, priority="high", deployment_strategy="immediate")
    ota.campaigns.start(campaign_id)
    (created,) = events_of(ota, "campaign.created")
    assert SPEC_FIELDS["campaign.created"] <= set(created)
    assert (created["firmware_version"], created["target_device_count"]) == ("2.0.0", 3)
    assert (created["deployment_strategy"], created["priority"]) == ("immediate", "high")
    assert (created["version"], created["target_count"]) == ("2.0.0", 3)  # kept
    (started,) = events_of(ota, "campaign.started")
    assert SPEC_FIELDS["campaign.started"] <= set(started)
    assert started["timestamp"] == iso_ms(int(ota.clock.now * 1000))


def test_update_cancelled_carries_the_spec_fields() -> None:
    ota = Ota()
    ota.fleet.put(fleet(1))
    package = ota.package("2.0.0")
    update = ota.devices.update_device(VEHICLE_0, {"firmware_id": package.firmware_id})
    ota.devices.cancel(update.device_update_id)
    (detail,) = events_of(ota, "update.cancelled")
    assert SPEC_FIELDS["update.cancelled"] <= set(detail)
    assert (detail["device_id"], detail["update_id"]) == (VEHICLE_0, update.device_update_id)
    assert (detail["firmware_id"], detail["firmware_version"]) == (package.firmware_id, "2.0.0")
    assert is_iso(detail["timestamp"])


VEHICLE_0 = fleet(1)[0].vehicle_id


def test_rollback_initiated_carries_the_spec_fields() -> None:
    ota = Ota()
    ota.fleet.put(fleet(1))
    ota.package("1.0.0")
    update = ota.devices.update_device(VEHICLE_0, {"firmware_id": ota.package().firmware_id})
    for state in TO_COMPLETION:
        ota.report(VEHICLE_0, update.update_id, state)
    ota.report(VEHICLE_0, update.update_id, S.COMPLETED, installed="2.0.0")
    rollback = ota.devices.rollback(VEHICLE_0, {"reason": "driver complaint"})
    (detail,) = events_of(ota, "rollback.initiated")
    assert SPEC_FIELDS["rollback.initiated"] <= set(detail)
    assert (detail["from_version"], detail["to_version"]) == ("2.0.0", "1.0.0")
    assert (detail["trigger"], detail["device_id"]) == ("manual", VEHICLE_0)
    assert detail["rollback_id"] == rollback.update_id
    assert is_iso(detail["timestamp"])


# -- beta opt-in (BR-OTA-009) ---------------------------------------------------


def beta_package(ota: Ota, version: str = "2.1.0-beta.1") -> Package:
    firmware_id = hashlib.sha256(f"beta:{version}".encode()).hexdigest()[:32]
    return ota.packages.add(
        Package(firmware_id, "fw", version, MODEL, 1024, "0" * 64, available=True, is_beta=True)
    )


def opted(vehicles: list[Vehicle], *indexes: int) -> list[Vehicle]:
    """`vehicles`, those at `indexes` opted in to beta firmware."""
    return [replace(v, beta_opt_in=n in indexes) for n, v in enumerate(vehicles)]


def test_the_opt_in_lives_in_the_registry_items_attributes() -> None:
    vehicle = opted(fleet(1), 0)[0]
    item = {k: v for k, v in vehicle.to_item().items() if v is not None}  # as stored
    assert item["attributes"] == {"beta_opt_in": "true"}
    assert Vehicle.from_item(item).beta_opt_in
    plain = {k: v for k, v in fleet(1)[0].to_item().items() if v is not None}
    assert not Vehicle.from_item(plain).beta_opt_in  # default: no opt-in
    assert not Vehicle.from_item({**item, "attributes": {"beta_opt_in": "yes"}}).beta_opt_in


def test_the_beta_gate_keeps_the_opted_in_and_counts_the_others() -> None:
    targets = tuple(Target(vin(n), "eu-west", MODEL, "1.0.0") for n in range(4))
    gated = beta_gate(Eligibility(targets, {"other_model": 1, "up_to_date": 0}), {vin(1), vin(3)})
    assert [t.vehicle_id for t in gated.targets] == [vin(1), vin(3)]
    assert gated.excluded == {"other_model": 1, "up_to_date": 0, BETA_EXCLUDED: 2}


@pytest.mark.parametrize("indexed", [False, True])
def test_a_beta_campaign_targets_the_opted_in_vehicles_only(indexed: bool) -> None:
    ota = Ota(fleet=InMemoryFleet(indexed=indexed))
    ota.fleet.put(opted(fleet(5), 1, 3))
    package = beta_package(ota)
    body = {"name": "beta", "firmware_id": package.firmware_id, "target_filter": "year > 0"}
    report = ota.campaigns.create(body)
    assert report.campaign.target_count == 2
    assert report.excluded[BETA_EXCLUDED] == 3
    # the same fleet takes a production release whole
    production = ota.campaigns.create({**body, "firmware_id": ota.package("2.0.0").firmware_id})
    assert production.campaign.target_count == 5


def test_a_beta_campaign_with_nobody_opted_in_is_a_400_naming_the_rule() -> None:
    ota = Ota()
    ota.fleet.put(fleet(3))
    package = beta_package(ota)
    with pytest.raises(InvalidField, match=r"beta release \(BR-OTA-009\): 3 matching") as caught:
        ota.campaigns.create(
            {"name": "b", "firmware_id": package.firmware_id, "target_filter": "year > 0"}
        )
    assert caught.value.http_status == 400
    assert ota.campaign_store.list()[0] == []  # nothing created


def test_a_device_update_with_beta_firmware_needs_the_vehicles_opt_in() -> None:
    ota = Ota()
    ota.fleet.put(opted(fleet(2), 1))
    package = beta_package(ota)
    with pytest.raises(InvalidInput, match="not opted in to beta"):
        ota.devices.update_device(fleet(2)[0].vehicle_id, {"firmware_id": package.firmware_id})
    update = ota.devices.update_device(fleet(2)[1].vehicle_id, {"firmware_id": package.firmware_id})
    assert update.to_version == "2.1.0-beta.1"


def test_the_api_answers_a_beta_campaigns_exclusions() -> None:
    # through the API's own route: the answer names the exclusion reason and count
    ota = Ota()
    ota.fleet.put(opted(fleet(3), 0))
    package = beta_package(ota)
    app = build_app(
        ApiServices(campaigns=ota.campaigns), ApiAuth([KEY_ENTRY]), modules=[campaign_routes]
    )
    body = {"name": "beta", "firmware_id": package.firmware_id, "target_filter": "year > 0"}
    status, _, answer = call(app, "POST", "/api/v1/ota/campaigns", headers=AUTH, body=body)
    assert status == 201, answer
    assert (answer["target_count"], answer["excluded"][BETA_EXCLUDED]) == (1, 2)
