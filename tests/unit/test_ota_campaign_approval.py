"""Campaign approval (PRD E2-US6): approve with a comment, reject with a reason.

The rules (`lifecycle.next_status`), the service over the in-memory stores
(what is recorded, which event goes out, that nobody is ever notified after
a rejection) and the routes over a synthetic API Gateway event (who may call
them, what the body must hold). The same over real HTTP and moto:
`tests/integration/test_api_campaign_rejection.py`.
"""

from __future__ import annotations

from typing import Any

import pytest
from api_events import call
from ota_service_harness import Ota, fleet

from v2c.contract.errors import Conflict, InvalidField
from v2c.handlers.api import ApiAuth, ApiServices, build_app
from v2c.handlers.api.routes import campaigns as campaign_routes
from v2c.handlers.ota.domain.lifecycle import (
    ACTIVE,
    ALLOWED,
    CampaignCommand,
    CampaignStatus,
    next_status,
)

C = CampaignStatus
REJECT = CampaignCommand.REJECT


# -- the rules -------------------------------------------------------------------------


def test_a_campaign_awaiting_approval_can_be_rejected_and_that_is_final() -> None:
    assert next_status(C.CREATED, REJECT, requires_approval=True) is C.REJECTED
    assert C.REJECTED not in ACTIVE
    assert all(C.REJECTED not in sources for sources, _ in ALLOWED.values())


@pytest.mark.parametrize(
    "status", [C.IN_PROGRESS, C.PAUSED, C.COMPLETED, C.CANCELLED, C.REJECTED, C.ROLLING_BACK]
)
def test_reject_is_a_409_outside_created(status: CampaignStatus) -> None:
    with pytest.raises(Conflict, match="cannot reject"):
        next_status(status, REJECT, requires_approval=True)


def test_reject_waits_for_the_plan_and_refuses_what_needs_no_answer() -> None:
    with pytest.raises(Conflict, match="still planning"):
        next_status(C.PLANNING, REJECT, requires_approval=True)
    with pytest.raises(Conflict, match="needs no approval"):
        next_status(C.CREATED, REJECT, requires_approval=False)
    with pytest.raises(Conflict, match="cancel it"):
        next_status(C.CREATED, REJECT, requires_approval=True, approved=True)


# -- the service -----------------------------------------------------------------------


def _awaiting(ota: Ota, n: int = 3, **spec: Any) -> str:
    ota.fleet.put(fleet(n))
    body = {
        "name": "needs a yes",
        "firmware_id": ota.package().firmware_id,
        "target_filter": "year > 0",
        "deployment_strategy": "immediate",
        "requires_approval": True,
        **spec,
    }
    return ota.campaigns.create(body, created_by="alice").campaign.campaign_id


def test_approve_records_the_approver_the_time_and_the_comment_and_says_so() -> None:
    ota = Ota()
    campaign_id = _awaiting(ota)
    ota.clock.advance(60)
    approved = ota.campaigns.approve(campaign_id, " bob ", " ship it after the freeze ")
    assert approved.status is C.CREATED
    assert approved.approved_by == "bob"
    assert approved.approved_at_ms == int(ota.clock.now * 1000)
    assert approved.approval_comment == "ship it after the freeze"
    assert ota.campaigns.get(campaign_id).approval_comment == "ship it after the freeze"
    kind, detail = ota.events.events[-1]
    assert kind == "campaign.approved"
    assert (detail["approved_by"], detail["comment"]) == ("bob", "ship it after the freeze")
    assert ota.notified() == []  # approval is not a start


def test_a_rejected_campaign_is_final_records_who_and_why_and_notifies_nobody() -> None:
    ota = Ota()
    campaign_id = _awaiting(ota, 4)
    ota.clock.advance(30)
    rejected = ota.campaigns.reject(campaign_id, "bob", "  wrong firmware for the EU fleet ")
    now_ms = int(ota.clock.now * 1000)
    assert rejected.status is C.REJECTED
    assert rejected.status_reason == "wrong firmware for the EU fleet"
    assert (rejected.rejected_by, rejected.rejected_at_ms) == ("bob", now_ms)
    assert rejected.finished_at_ms == now_ms
    assert rejected.approved_by is None
    kind, detail = ota.events.events[-1]
    assert kind == "campaign.rejected"
    assert (detail["campaign_id"], detail["status"]) == (campaign_id, "rejected")
    assert (detail["rejected_by"], detail["reason"]) == ("bob", "wrong firmware for the EU fleet")
    # Nothing can bring it back, and no pass of the monitor notifies anyone.
    for command in (ota.campaigns.start, ota.campaigns.resume, ota.campaigns.cancel):
        with pytest.raises(Conflict):
            command(campaign_id)
    with pytest.raises(Conflict):
        ota.campaigns.approve(campaign_id, "carol")
    with pytest.raises(Conflict):
        ota.campaigns.reject(campaign_id, "carol", "again")
    ota.clock.advance(3600)
    assert ota.campaigns.monitor()["notified"] == 0
    assert ota.campaigns.advance(campaign_id).notified == 0
    assert ota.notified() == []
    assert list(ota.update_store.for_campaign(campaign_id)) == []
    counters = ota.campaigns.get(campaign_id).counters  # never dispatched: all cancelled
    assert (counters.pending, counters.cancelled, counters.total) == (0, 4, 4)


def test_the_creator_may_reject_its_own_campaign_but_never_approve_it() -> None:
    ota = Ota()
    campaign_id = _awaiting(ota)
    assert ota.campaigns.reject(campaign_id, "alice", "changed my mind").rejected_by == "alice"


def test_reject_needs_a_reason_and_a_principal() -> None:
    ota = Ota()
    campaign_id = _awaiting(ota)
    with pytest.raises(InvalidField, match="reason"):
        ota.campaigns.reject(campaign_id, "bob", "   ")
    with pytest.raises(InvalidField, match="approved_by"):
        ota.campaigns.reject(campaign_id, " ", "no")
    assert ota.campaigns.get(campaign_id).status is C.CREATED


def test_an_approved_campaign_cannot_be_rejected_any_more() -> None:
    ota = Ota()
    campaign_id = _awaiting(ota)
    ota.campaigns.approve(campaign_id, "bob")
    with pytest.raises(Conflict, match="cancel it"):
        ota.campaigns.reject(campaign_id, "carol", "too late")
    assert ota.campaigns.get(campaign_id).status is C.CREATED


# -- the routes ------------------------------------------------------------------------

FLEET_KEY, APPROVER_KEY = "fleet-key-0123456789", "approver-key-0123456789"
AS_FLEET_MANAGER = {"X-API-Key": FLEET_KEY}
AS_APPROVER = {"X-API-Key": APPROVER_KEY}


def _api(ota: Ota) -> Any:
    auth = ApiAuth([f"alice:fleet_manager+viewer:{FLEET_KEY}", f"bob:approver:{APPROVER_KEY}"])
    return build_app(ApiServices(campaigns=ota.campaigns), auth, modules=[campaign_routes])


def _path(campaign_id: str, verb: str) -> str:
    return f"/api/v1/ota/campaigns/{campaign_id}/{verb}"


def test_the_reject_route_is_the_approvers_needs_a_reason_and_answers_the_campaign() -> None:
    ota = Ota()
    app = _api(ota)
    campaign_id = _awaiting(ota)
    reject = _path(campaign_id, "reject")
    status, _, body = call(app, "POST", reject, headers=AS_FLEET_MANAGER, body={"reason": "no"})
    assert (status, body["reason"]) == (403, "forbidden")
    for bad in ({}, {"reason": ""}, {"reason": "   "}, {"reason": "no", "rejected_by": "x"}):
        status, _, body = call(app, "POST", reject, headers=AS_APPROVER, body=bad)
        assert (status, body["reason"]) == (400, "validation_failed"), bad
    assert ota.campaigns.get(campaign_id).status is C.CREATED
    status, _, body = call(app, "POST", reject, headers=AS_APPROVER, body={"reason": "not now"})
    assert status == 200, body
    assert (body["status"], body["status_reason"]) == ("rejected", "not now")
    assert (body["rejected_by"], body["approved_by"]) == ("bob", None)
    assert body["rejected_at"] == body["finished_at"] is not None
    status, _, body = call(app, "POST", reject, headers=AS_APPROVER, body={"reason": "again"})
    assert (status, body["reason"]) == (409, "conflict")
    start = _path(campaign_id, "start")
    status, _, body = call(app, "POST", start, headers=AS_FLEET_MANAGER)
    assert (status, body["reason"]) == (409, "conflict")


def test_the_approve_route_stores_an_optional_comment() -> None:
    ota = Ota()
    app = _api(ota)
    campaign_id = _awaiting(ota)
    approve = _path(campaign_id, "approve")
    status, _, body = call(app, "POST", approve, headers=AS_APPROVER, body={"comment": ""})
    assert (status, body["reason"]) == (400, "validation_failed")
    body_in = {"comment": "checked the release notes"}
    status, _, body = call(app, "POST", approve, headers=AS_APPROVER, body=body_in)
    assert status == 200, body
    assert (body["approved_by"], body["approval_comment"]) == ("bob", "checked the release notes")
    other = _awaiting(ota)
    status, _, body = call(app, "POST", _path(other, "approve"), headers=AS_APPROVER)
    assert (status, body["approval_comment"]) == (200, "")  # no body at all: no comment
