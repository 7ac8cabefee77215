"""Telling one vehicle about one update: record it as notified, then publish.

Campaign dispatch, single and bulk device updates, retries and rollbacks
all notify a vehicle the same way, so the record comes first (a crash after
it is healed by the retry or the monitor's re-notification; a message sent
without a record would be a report nobody can place) and the message carries
exactly the release the record points at.
"""

from __future__ import annotations

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

    def send(self, update: VehicleUpdate, release: Release | None = None) -> bool:
        """Publish the notification of an existing record. Without `release`,
        the one the record points at: its own (outside campaigns) or its
        campaign's."""
        if release is not None:
            manifest, signature, key_id = release.manifest, release.signature, release.key_id
        elif update.manifest:
            manifest, signature, key_id = update.manifest, update.signature, update.key_id
        else:
            stored = self._campaigns.get(update.campaign_id).release
            manifest, signature, key_id = stored.manifest, stored.signature, stored.key_id
        return self._notifier.send(
            Notification(
                vehicle_id=update.vehicle_id,
                region=update.region,
                update_id=update.update_id,
                device_update_id=update.device_update_id,
                firmware_id=update.firmware_id,
                manifest=manifest,
                signature=signature,
                key_id=key_id,
            )
        )
