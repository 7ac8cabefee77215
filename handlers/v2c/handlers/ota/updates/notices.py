"""Telling vehicles about an update: record them as notified, then publish.

Campaign dispatch, single and bulk device updates, retries and rollbacks
all notify a vehicle the same way, so the record comes first (a crash after
it leaves a notified record without a message, healed by re-notifying it:
the update's retry, which the monitor's stall alert prompts; a message sent
without a record would be a report nobody can place) and the message
carries exactly the release the record points at.

A campaign notifies a chunk at a time (`first_chunk`): the chunk's records
and the campaign's cursor move are one write, then the chunk's messages go
out together, pipelined by the sink, each answered on its own.
"""

from __future__ import annotations

from collections.abc import Sequence

from v2c.handlers.ota.campaigns.record import Release
from v2c.handlers.ota.notifier import Notification, NotificationSender
from v2c.handlers.ota.stores import CampaignStore, CampaignWrite, UpdateStore
from v2c.handlers.ota.updates.record import VehicleUpdate


class Notices:
    def __init__(
        self, updates: UpdateStore, campaigns: CampaignStore, notifier: NotificationSender
    ) -> None:
        self._updates = updates
        self._campaigns = campaigns
        self._notifier = notifier

    def record(self, update: VehicleUpdate, with_campaign: CampaignWrite | None = None) -> bool:
        """Write the new record; False if it exists (a retried request) or the
        campaign moved (`with_campaign`'s condition failed)."""
        return self._updates.create(update, with_campaign)

    def first(
        self,
        update: VehicleUpdate,
        release: Release,
        with_campaign: CampaignWrite | None = None,
    ) -> bool | None:
        """Record and send; None if nothing was recorded (and so nothing
        sent), else whether the message was delivered (False: dead-lettered)."""
        if not self.record(update, with_campaign):
            return None
        return self.send(update, release)

    def first_chunk(
        self,
        updates: Sequence[VehicleUpdate],
        release: Release,
        with_campaign: CampaignWrite | None = None,
    ) -> list[bool] | None:
        """Record a chunk of new updates in one write (with the campaign's
        cursor move), then send them all; None if nothing was recorded (a
        record existed or the campaign moved: nothing sent), else whether
        each message was delivered, in order (False: dead-lettered)."""
        if not self._updates.create_many(updates, with_campaign):
            return None
        return self.send_many(updates, release)

    def send(self, update: VehicleUpdate, release: Release | None = None) -> bool:
        """Publish the notification of an existing record. Without `release`,
        the one the record points at: its own (outside campaigns) or its
        campaign's."""
        return self._notifier.send(self._note(update, release))

    def send_many(
        self, updates: Sequence[VehicleUpdate], release: Release | None = None
    ) -> list[bool]:
        """`send` for each existing record, pipelined; one answer each, in order."""
        return self._notifier.send_many([self._note(u, release) for u in updates])

    def _note(self, update: VehicleUpdate, release: Release | None) -> Notification:
        if release is not None:
            manifest, signature, key_id = release.manifest, release.signature, release.key_id
        elif update.manifest:
            manifest, signature, key_id = update.manifest, update.signature, update.key_id
        else:
            stored = self._campaigns.get(update.campaign_id).release
            manifest, signature, key_id = stored.manifest, stored.signature, stored.key_id
        return Notification(
            vehicle_id=update.vehicle_id,
            region=update.region,
            update_id=update.update_id,
            device_update_id=update.device_update_id,
            firmware_id=update.firmware_id,
            manifest=manifest,
            signature=signature,
            key_id=key_id,
        )
