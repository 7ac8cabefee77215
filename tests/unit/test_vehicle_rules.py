"""Onboarding decisions: registration idempotency, attribute bounds, search, decommission."""

from __future__ import annotations

from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from v2c.contract.certificate_renewal import build_csr
from v2c.contract.errors import Conflict, InvalidField, NotFound
from v2c.handlers.ota.domain.target_filter import parse as parse_filter
from v2c.handlers.ota.fleet import Vehicle
from v2c.handlers.ota.fleet_index.codec import (
    Columns,
    decode_delta,
    decode_shard,
    encode_delta,
    encode_shard,
)
from v2c.handlers.ota.fleet_index.select import FleetSnapshot, resolve
from v2c.handlers.ota.in_memory_ports import InMemoryFleet
from v2c.handlers.vehicles import rules
from v2c.handlers.vehicles.csr import check_csr
from v2c.handlers.vehicles.record import Certificate, VehicleRecord, VehicleStatus
from v2c.handlers.vehicles.rules import RegistrationOutcome as Outcome

VIN = "VIN-1HGBH41JXMN109186"
NOW = 1_800_000_000_000
DAY = 24 * 3600 * 1000


def csr(key: ec.EllipticCurvePrivateKey | None = None, vin: str = VIN):  # type: ignore[no-untyped-def]
    key = key or ec.generate_private_key(ec.SECP256R1())
    return check_csr(build_csr(key, vin), vin)


def request(**overrides: object) -> rules.Registration:
    fields: dict[str, object] = {"csr": None}
    fields.update(overrides)
    return rules.registration(VIN, "Accord", "eu-west-1", 2024, **fields)  # type: ignore[arg-type]


def cert(key_sha: str, expires_in_days: int = 300) -> Certificate:
    return Certificate("c" * 64, "PEM", NOW + expires_in_days * DAY, NOW - DAY, key_sha)


def active(certificate: Certificate | None = None, **fields: object) -> VehicleRecord:
    base = VehicleRecord(
        VIN, "Accord", "eu-west-1", 2024, installed_version="1.2.0", certificate=certificate,
        registered_at_ms=NOW - 10 * DAY, registered_by="alice", changed_at=5,
    )  # fmt: skip
    return replace(base, **fields)  # type: ignore[arg-type]


# -- registration ------------------------------------------------------------------------


def test_a_new_vehicle_with_a_csr_is_created_with_a_certificate_and_defaults() -> None:
    wanted = request(csr=csr())
    plan = rules.plan_registration(None, wanted, NOW)
    assert (plan.outcome, plan.issue, plan.revoke) == (Outcome.CREATED, True, None)
    issued = cert(wanted.csr.public_key_sha256 if wanted.csr else "")
    record = rules.registered(None, wanted, issued, NOW, "bob")
    assert record.installed_version == rules.DEFAULT_VERSION
    assert record.certificate == issued
    assert (record.registered_at_ms, record.registered_by) == (NOW, "bob")
    assert record.attributes == {}
    assert record.active


def test_without_a_csr_a_new_vehicle_is_inventory_only() -> None:
    plan = rules.plan_registration(None, request(), NOW)
    assert (plan.outcome, plan.issue) == (Outcome.CREATED, False)
    assert rules.registered(None, request(), None, NOW, "bob").certificate is None


def test_the_same_key_again_is_unchanged_and_keeps_its_certificate() -> None:
    facts = csr()
    stored = active(cert(facts.public_key_sha256))
    again = request(csr=facts, installed_version="1.2.0")
    plan = rules.plan_registration(stored, again, NOW)
    assert (plan.outcome, plan.issue) == (Outcome.UPDATED, False)
    after = rules.registered(stored, again, None, NOW, "carol")
    assert rules.settle(plan, stored, after) is Outcome.UNCHANGED
    assert after.certificate == stored.certificate
    assert (after.registered_at_ms, after.registered_by) == (stored.registered_at_ms, "alice")


def test_inventory_fields_left_out_keep_their_stored_values() -> None:
    stored = active(cert("k"), attributes={"color": "red"}, hardware_id="HW-9", make="Honda")
    after = rules.registered(stored, request(), None, NOW, "bob")
    assert (after.installed_version, after.hardware_id, after.make) == ("1.2.0", "HW-9", "Honda")
    assert after.attributes == {"color": "red"}
    changed = rules.registered(stored, request(attributes={"color": "blue"}), None, NOW, "bob")
    plan = rules.plan_registration(stored, request(attributes={"color": "blue"}), NOW)
    assert rules.settle(plan, stored, changed) is Outcome.UPDATED


def test_the_same_key_near_expiry_is_renewed_and_the_old_certificate_revoked() -> None:
    facts = csr()
    old = cert(facts.public_key_sha256, expires_in_days=10)
    plan = rules.plan_registration(active(old), request(csr=facts), NOW)
    assert (plan.outcome, plan.issue, plan.revoke) == (Outcome.RENEWED, True, old)


def test_another_key_for_an_active_vehicle_is_409_unless_replace() -> None:
    stored = active(cert("someone else's key"))
    with pytest.raises(Conflict, match="set replace"):
        rules.plan_registration(stored, request(csr=csr()), NOW)
    plan = rules.plan_registration(stored, request(csr=csr(), replace=True), NOW)
    assert (plan.outcome, plan.issue, plan.revoke) == (Outcome.REPLACED, True, stored.certificate)


def test_an_active_vehicle_without_a_certificate_gets_one() -> None:
    plan = rules.plan_registration(active(None), request(csr=csr()), NOW)
    assert (plan.outcome, plan.issue) == (Outcome.CERTIFIED, True)


def test_a_decommissioned_vehicle_is_reactivated_as_new() -> None:
    gone = active(
        cert("k"), status=VehicleStatus.DECOMMISSIONED, decommissioned_at_ms=NOW - DAY,
        attributes={"color": "red"},
    )  # fmt: skip
    plan = rules.plan_registration(gone, request(csr=csr(), installed_version=None), NOW)
    assert (plan.outcome, plan.issue) == (Outcome.REACTIVATED, True)
    back = rules.registered(gone, request(), cert("new"), NOW, "dave")
    assert back.active
    assert back.decommissioned_at_ms == 0
    assert back.attributes == {}  # nothing of the old life carries over by accident
    assert (back.registered_at_ms, back.registered_by) == (NOW, "dave")
    assert back.installed_version == rules.DEFAULT_VERSION


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"vehicle_id": "VIN-123"}, "vehicle_id"),
        ({"region": "mars-north-1"}, "region"),
        ({"region": "us-west-2"}, "region"),  # a real region the fleet does not operate in
        ({"year": 1800}, "year"),
        ({"model": " "}, "model"),
        ({"model": "a\nb"}, "model"),
        ({"installed_version": "2.1"}, "installed_version"),
        ({"hardware_id": "x" * 101}, "hardware_id"),
    ],
)
def test_invalid_fields_are_named(fields: dict[str, object], field: str) -> None:
    base: dict[str, object] = {
        "vehicle_id": VIN, "model": "Accord", "region": "eu-west-1", "year": 2024
    }  # fmt: skip
    base.update(fields)
    with pytest.raises(InvalidField) as caught:
        rules.registration(**base)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_a_csr_for_another_vehicle_is_refused() -> None:
    with pytest.raises(InvalidField, match="common name"):
        request(csr=csr(vin="VIN-2HGBH41JXMN109186"))


# -- attributes ------------------------------------------------------------------------


def test_attributes_are_bounded_in_count_name_value_and_total_size() -> None:
    assert rules.check_attributes({"color": "red", "fleet.region": "n"}) == {
        "color": "red",
        "fleet.region": "n",
    }
    too_many = {f"k{i}": "v" for i in range(rules.MAX_ATTRIBUTES + 1)}
    cases = [
        too_many,
        {"1bad": "v"},
        {"bad key": "v"},
        {"k": "x" * (rules.MAX_ATTRIBUTE_VALUE + 1)},
        {"k": "tab\there"},
        {f"k{i}": "x" * 200 for i in range(rules.MAX_ATTRIBUTES)},  # 6.4 KB > 4 KB
    ]
    for attributes in cases:
        with pytest.raises(InvalidField):
            rules.check_attributes(attributes)
    assert len(rules.check_attributes({f"k{i}": "v" for i in range(rules.MAX_ATTRIBUTES)})) == 32


def test_a_patch_merges_attributes_and_null_removes_one() -> None:
    stored = active(attributes={"color": "red", "fleet": "north"})
    after = rules.patched(stored, VIN, {"color": None, "owner": "acme"}, "HW-2", None)
    assert after.attributes == {"fleet": "north", "owner": "acme"}
    assert after.hardware_id == "HW-2"
    with pytest.raises(NotFound):
        rules.patched(None, VIN, {}, None, None)
    with pytest.raises(Conflict, match="decommissioned"):
        rules.patched(replace(stored, status=VehicleStatus.DECOMMISSIONED), VIN, {}, None, None)
    with pytest.raises(InvalidField):
        rules.patched(stored, VIN, {f"k{i}": "v" for i in range(40)}, None, None)


# -- decommission ------------------------------------------------------------------------


def test_decommission_marks_once_and_is_idempotent() -> None:
    stored = active(cert("k"))
    gone = rules.decommissioned(stored, VIN, NOW, "erin", "scrapped")
    assert gone.status is VehicleStatus.DECOMMISSIONED
    assert (gone.decommissioned_at_ms, gone.decommissioned_by, gone.decommission_reason) == (
        NOW, "erin", "scrapped"
    )  # fmt: skip
    assert rules.decommissioned(gone, VIN, NOW + 1, "frank", "again") is gone
    with pytest.raises(NotFound):
        rules.decommissioned(None, VIN, NOW, "erin", "")
    revoked = rules.revoked(gone, NOW + 5)
    assert revoked.certificate is not None
    assert revoked.certificate.revoked_at_ms == NOW + 5
    assert rules.revoked(revoked, NOW + 9) is revoked


def test_a_decommissioned_vehicle_is_no_campaign_target_on_any_path() -> None:
    gone = replace(active(), status=VehicleStatus.DECOMMISSIONED).vehicle()
    here = Vehicle("VIN-2HGBH41JXMN109186", "Accord", "eu-west-1", 2024, installed_version="1.0.0")
    assert not gone.active
    assert gone.to_item()["status"] == "decommissioned"
    stored = {k: v for k, v in gone.to_item().items() if v is not None}  # as DynamoDB keeps it
    assert Vehicle.from_item(stored) == gone
    everyone = parse_filter("model = 'Accord'")
    # the table path (and its in-memory twin)
    fleet = InMemoryFleet([gone, here])
    assert [v.vehicle_id for v in fleet.select(everyone, devices=[gone.vehicle_id])] == [
        here.vehicle_id
    ]
    # the fleet index path: the row is kept (retired), never selected
    columns = Columns("Accord")
    columns.apply([gone.index_row(2), here.index_row(1)])
    shard = decode_shard(encode_shard(columns, 0), "Accord")
    assert sorted(shard.retired) == [False, True]
    delta = decode_delta(encode_delta([gone.index_row(3)]), "Accord")
    assert delta[0].retired  # type: ignore[union-attr]
    eligible = resolve(
        FleetSnapshot({"Accord": shard}), everyone, "Accord", "2.0.0", devices=[gone.vehicle_id]
    )
    assert [t.vehicle_id for t in eligible.targets] == [here.vehicle_id]


# -- search ------------------------------------------------------------------------------


def test_a_query_matches_on_every_filter_at_once() -> None:
    record = active(attributes={"color": "red", "fleet": "n"}, last_seen_at_ms=NOW)
    assert rules.VehicleQuery().matches(record)
    assert rules.VehicleQuery(
        model="Accord", region="eu-west-1", installed_version="1.2.0",
        status=VehicleStatus.ACTIVE, attributes=(("color", "red"),), vin_prefix="VIN-1HGB",
        last_seen_after_ms=NOW - 1, last_seen_before_ms=NOW + 1,
    ).matches(record)  # fmt: skip
    for miss in (
        rules.VehicleQuery(model="Civic"),
        rules.VehicleQuery(attributes=(("color", "blue"),)),
        rules.VehicleQuery(attributes=(("size", "red"),)),
        rules.VehicleQuery(status=VehicleStatus.DECOMMISSIONED),
        rules.VehicleQuery(last_seen_before_ms=NOW),
        rules.VehicleQuery(vin_prefix="VIN-2"),
    ):
        assert not miss.matches(record), miss
    never_seen = replace(record, last_seen_at_ms=0)
    assert rules.VehicleQuery(last_seen_before_ms=NOW).matches(never_seen)
    assert not rules.VehicleQuery(last_seen_after_ms=0).matches(never_seen)


def test_filter_texts_are_checked() -> None:
    assert rules.parse_attribute_filter("color=red=ish") == ("color", "red=ish")
    assert rules.normalize_vin_prefix("5v2c") == "VIN-5V2C"
    assert rules.normalize_vin_prefix("VIN-") == "VIN-"
    for bad in ("color", "=red", "bad key=x"):
        with pytest.raises(InvalidField):
            rules.parse_attribute_filter(bad)
    with pytest.raises(InvalidField):
        rules.normalize_vin_prefix("VIN-IOQ")


def test_a_vehicle_decommissioned_after_moving_models_is_not_targeted_by_its_old_row() -> None:
    moved = "VIN-3HGBH41JXMN109186"
    old = Columns("Accord")
    old.apply([Vehicle(moved, "Accord", "eu-west-1", 2024, installed_version="1.0.0").index_row(1)])
    new = Columns("Civic")
    gone = Vehicle(moved, "Civic", "eu-west-1", 2024, installed_version="1.0.0", active=False)
    new.apply([gone.index_row(5)])
    snapshot = FleetSnapshot({"Accord": old, "Civic": new})
    eligible = resolve(snapshot, parse_filter("year = 2024"), "Accord", "2.0.0")
    assert eligible.targets == ()


def test_the_deployments_regions_come_from_vehicle_regions() -> None:
    from v2c.contract.errors import ConfigurationError
    from v2c.handlers.vehicles.config import deployed_regions

    assert deployed_regions({}) is None
    assert deployed_regions({"VEHICLE_REGIONS": " eu-west-1, us-east-1 "}) == (
        "eu-west-1",
        "us-east-1",
    )
    with pytest.raises(ConfigurationError, match="mars-1"):
        deployed_regions({"VEHICLE_REGIONS": "eu-west-1,mars-1"})


def test_a_certified_vehicle_cannot_move_region_by_registration_alone() -> None:
    def moved(**fields: object) -> rules.Registration:
        return rules.registration(VIN, "Accord", "us-east-1", 2024, **fields)  # type: ignore[arg-type]

    stored = active(cert("its key"))  # certified in eu-west-1
    with pytest.raises(Conflict, match="decommission"):
        rules.plan_registration(stored, moved(), NOW)
    with pytest.raises(Conflict, match="decommission"):
        rules.plan_registration(stored, moved(csr=csr(), replace=True), NOW)
    # an inventory-only vehicle (no certificate, no thing yet) may move
    plan = rules.plan_registration(active(None), moved(), NOW)
    assert plan.outcome is Outcome.UPDATED


def test_the_renewal_filter_takes_live_certificates_expiring_before_the_time() -> None:
    soon = active(cert("k", expires_in_days=10))
    later = active(cert("k", expires_in_days=300))
    query = rules.VehicleQuery(certificate_expires_before_ms=NOW + 30 * DAY)
    assert query.matches(soon)
    assert not query.matches(later)
    assert not query.matches(active(None))  # inventory only: nothing to renew
    revoked = replace(soon.certificate, revoked_at_ms=NOW)  # type: ignore[type-var]
    assert not query.matches(active(revoked))
