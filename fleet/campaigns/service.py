"""The control room's campaigns: creating one for a target, and every status change people ask for."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from fleet import cursors
from fleet.access.models import Permission, Principal
from fleet.audit.service import record
from fleet.campaigns.models import (STOPPED_BY_ABORT, Campaign, CampaignDeviceTimeline, CampaignRequest,
                                    CampaignStatus, DeviceState, SkipReason)
from fleet.campaigns.progress import campaign_from_rows
from fleet.campaigns.repository import CampaignRepository, begin_running
from fleet.campaigns.waves import wave_sizes
from fleet.commands.service import resolve_target, target_json
from fleet.db import Database
from fleet.errors import Conflict, FieldError, NotFound, PermissionDenied, ValidationFailed
from fleet.events.models import CAMPAIGN_UPDATED
from fleet.events.service import publish
from fleet.firmware.models import Image
from fleet.firmware.repository import ImageRepository
from fleet.firmware.service import verify_stored
from fleet.registry.models import Page

# How many devices a 409 names (it says how many there are in all).
NAMED_IN_CONFLICT = 20
# Waves a campaign may have (hawkBit's default limit of rollout groups): every read and event
# shows each wave's counts, and a growth of 1 over 40,000 lights would make 40,000 waves.
MAX_WAVES = 500
ABORTABLE = (CampaignStatus.RUNNING, CampaignStatus.PAUSED, CampaignStatus.SCHEDULED,
             CampaignStatus.AWAITING_APPROVAL)
RETRYABLE = (CampaignStatus.RUNNING, CampaignStatus.PAUSED, CampaignStatus.COMPLETED)
CANCELLABLE = (CampaignStatus.DRAFT, CampaignStatus.AWAITING_APPROVAL, CampaignStatus.SCHEDULED,
               CampaignStatus.RUNNING, CampaignStatus.PAUSED)
CANCELLED_BY_REQUEST = (DeviceState.PENDING, DeviceState.WAITING)


def require(principal: Principal, permission: Permission, what: str) -> None:
    """403 unless the caller's role has the permission (campaigns and maintenance windows alike)."""
    if not principal.can(permission):
        raise PermissionDenied(f"role {principal.role.value} may not {what}")


def skip_reason(image: Image, device: asyncpg.Record) -> tuple[SkipReason, str] | None:
    """Why a targeted device takes no part, or None when it does."""
    if device["status"] == "decommissioned":
        return SkipReason.DECOMMISSIONED, "decommissioned"
    if not image.fits(device["manufacturer"], device["model"]):
        return SkipReason.INCOMPATIBLE, (
            f"model {device['model'] or 'unknown'} of {device['manufacturer'] or 'unknown manufacturer'} "
            f"is not among the image's ({', '.join(image.models) or 'any model'}; "
            f"{', '.join(image.manufacturers) or 'any manufacturer'})")
    if device["firmware_version"] == image.version:
        return SkipReason.ALREADY_ON_VERSION, f"already runs {image.version}"
    return None


def settings_violations(request: CampaignRequest) -> list[FieldError]:
    errors = [FieldError("waves", m) for m in request.settings.waves.rule_violations()]
    window = request.settings.window
    if window is not None and window.start == window.end:
        errors.append(FieldError("window", "start and end must differ"))
    return errors


def _busy(rows: Sequence[asyncpg.Record]) -> Conflict:
    total = rows[0]["total"]
    devices = ", ".join(str(r["device_id"]) for r in rows)
    campaigns = ", ".join(sorted({str(r["campaign_id"]) for r in rows}))
    return Conflict(f"{total} device(s) already take part in another active campaign ({campaigns}): "
                    f"{devices}{' ...' if total > len(rows) else ''}",
                    [FieldError("target", f"in campaign(s) {campaigns}")])


class CampaignService:
    def __init__(self, db: Database, clock=lambda: datetime.now(UTC)) -> None:
        self.db = db
        self.clock = clock

    # -- reading -------------------------------------------------------------------------------

    async def get(self, principal: Principal, campaign_id: UUID) -> Campaign:
        require(principal, Permission.READ, "read campaigns")
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            return await self._campaign(conn, principal.tenant_id, campaign_id)

    async def list(self, principal: Principal, *, status: CampaignStatus | None = None,
                   cursor: str | None = None, limit: int = 50) -> Page:
        require(principal, Permission.READ, "read campaigns")
        before = cursors.decode(b"fc:", cursor, tuple[datetime, UUID]) if cursor else None
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            repo = CampaignRepository(conn)
            rows = await repo.campaigns(principal.tenant_id, status, before, limit + 1)
            more, rows = len(rows) > limit, rows[:limit]
            counts: dict[UUID, list[asyncpg.Record]] = {r["id"]: [] for r in rows}
            for c in await repo.counts(principal.tenant_id, list(counts)):
                counts[c["campaign_id"]].append(c)
        now = self.clock()
        items = [campaign_from_rows(r, counts[r["id"]], now) for r in rows]
        last = items[-1] if items else None
        return Page(items, cursors.encode(b"fc:", [last.created_at, str(last.id)]) if more and last else None)

    async def devices(self, principal: Principal, campaign_id: UUID, *, state: DeviceState | None = None,
                      wave: int | None = None, cursor: str | None = None, limit: int = 100) -> Page:
        require(principal, Permission.READ, "read campaigns")
        after = cursors.decode(b"fd:", cursor, tuple[int, UUID]) if cursor else None
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            repo = CampaignRepository(conn)
            if await repo.campaign(principal.tenant_id, campaign_id) is None:
                raise NotFound(f"campaign {campaign_id} not found")
            items = await repo.devices(principal.tenant_id, campaign_id, state, wave, after, limit + 1)
        more, items = len(items) > limit, items[:limit]
        return Page(items, cursors.encode(b"fd:", [items[-1].wave, str(items[-1].device_id)]) if more else None)

    async def device(self, principal: Principal, campaign_id: UUID, device_id: UUID) -> CampaignDeviceTimeline:
        require(principal, Permission.READ, "read campaigns")
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            repo = CampaignRepository(conn)
            device = await repo.device(principal.tenant_id, campaign_id, device_id)
            if device is None:
                raise NotFound(f"device {device_id} takes no part in campaign {campaign_id}")
            return CampaignDeviceTimeline(device, await repo.steps(principal.tenant_id, campaign_id, device_id))

    # -- creating and deleting -------------------------------------------------------------------

    async def create(self, principal: Principal, request: CampaignRequest) -> Campaign:
        require(principal, Permission.RUN_CAMPAIGNS, "run campaigns")
        errors = settings_violations(request)
        if errors:
            raise ValidationFailed("invalid campaign settings", errors)
        tenant_id = principal.tenant_id
        async with self.db.tenant_tx(tenant_id) as conn:
            image = await ImageRepository(conn).image(tenant_id, request.image_id)
            if image is None:
                raise ValidationFailed("unknown image", [FieldError(
                    "image_id", f"no firmware image {request.image_id} in this city")])
            device_ids = await resolve_target(conn, tenant_id, request.target)
            if not device_ids:
                raise ValidationFailed("empty target", [FieldError("target", "matches no devices")])
            repo = CampaignRepository(conn)
            campaign_id = await repo.insert(
                tenant_id, image.id, request.name, target_json(request.target),
                msgspec.to_builtins(request.settings), request.start_at, principal.api_key_id)
            taking_part, skipped = [], []
            for device in await repo.candidates(tenant_id, campaign_id, device_ids):
                why = skip_reason(image, device)
                (taking_part if why is None else skipped).append((device["id"], why))
            if taking_part:
                busy = await repo.busy_elsewhere(tenant_id, campaign_id, [d for d, _ in taking_part],
                                                 NAMED_IN_CONFLICT)
                if busy:
                    raise _busy(busy)
            sizes = wave_sizes(len(taking_part), request.settings.waves)
            if len(sizes) > MAX_WAVES:
                raise ValidationFailed("too many waves", [FieldError(
                    "waves", f"{len(taking_part)} devices in these waves make {len(sizes)} waves; at most "
                             f"{MAX_WAVES} (a larger canary, growth or size)")])
            waves = [wave for wave, size in enumerate(sizes) for _ in range(size)]
            try:
                await repo.insert_devices(
                    tenant_id, campaign_id, [d for d, _ in taking_part] + [d for d, _ in skipped],
                    waves + [0] * len(skipped),
                    [DeviceState.PENDING.value] * len(taking_part) + [DeviceState.SKIPPED.value] * len(skipped),
                    [None] * len(taking_part) + [why[0].value for _, why in skipped],
                    [None] * len(taking_part) + [why[1] for _, why in skipped])
            except (asyncpg.UniqueViolationError, asyncpg.DeadlockDetectedError):
                # Another campaign took one of them between the check and the insert.
                raise Conflict("a device joined another active campaign meanwhile; try again") from None
            await repo.set_sizes(tenant_id, campaign_id, len(taking_part), len(sizes))
            campaign = await self._campaign(conn, tenant_id, campaign_id)
            await record(conn, principal, "campaign.create", "campaign", campaign_id, None, _rendered(campaign))
            await publish(conn, tenant_id, CAMPAIGN_UPDATED, "campaign", campaign_id, _rendered(campaign))
            return campaign

    async def delete(self, principal: Principal, campaign_id: UUID) -> None:
        require(principal, Permission.RUN_CAMPAIGNS, "run campaigns")
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            before = await self._locked(conn, principal.tenant_id, campaign_id, (CampaignStatus.DRAFT,), "delete")
            await CampaignRepository(conn).delete(principal.tenant_id, campaign_id)
            await record(conn, principal, "campaign.delete", "campaign", campaign_id, _rendered(before), None)
            await publish(conn, principal.tenant_id, CAMPAIGN_UPDATED, "campaign", campaign_id,
                          {**_rendered(before), "deleted": True})

    # -- status changes --------------------------------------------------------------------------

    async def start(self, principal: Principal, campaign_id: UUID) -> Campaign:
        async def change(conn, repo: CampaignRepository, campaign: Campaign) -> None:
            # A tampered or revoked image fails here (422) and the campaign stays a draft.
            await verify_stored(conn, principal.tenant_id, campaign.image_id)
            if await repo.approval_required(principal.tenant_id):
                await repo.update(principal.tenant_id, campaign_id, started_by=principal.api_key_id,
                                  status=CampaignStatus.AWAITING_APPROVAL.value,
                                  status_reason="waiting for a second admin's approval")
            else:
                await repo.update(principal.tenant_id, campaign_id, started_by=principal.api_key_id)
                await self._go(conn, repo, principal.tenant_id, campaign)
        return await self._change(principal, campaign_id, "start", (CampaignStatus.DRAFT,), change)

    async def approve(self, principal: Principal, campaign_id: UUID) -> Campaign:
        async def change(conn, repo: CampaignRepository, campaign: Campaign) -> None:
            if principal.api_key_id is None or principal.api_key_id in (campaign.created_by, campaign.started_by):
                raise Conflict("a second admin must approve: this key created or started the campaign")
            await verify_stored(conn, principal.tenant_id, campaign.image_id)
            await repo.update(principal.tenant_id, campaign_id, approved_by=principal.api_key_id,
                              approved_at=self.clock())
            await self._go(conn, repo, principal.tenant_id, campaign)
        return await self._change(principal, campaign_id, "approve", (CampaignStatus.AWAITING_APPROVAL,),
                                  change, permission=Permission.APPROVE_CAMPAIGNS)

    async def pause(self, principal: Principal, campaign_id: UUID) -> Campaign:
        async def change(conn, repo: CampaignRepository, campaign: Campaign) -> None:
            who = await repo.key_name(principal.tenant_id, principal.api_key_id) or principal.actor
            await repo.update(principal.tenant_id, campaign_id, status=CampaignStatus.PAUSED.value,
                              paused_at=self.clock(), status_reason=f"paused by {who}")
        return await self._change(principal, campaign_id, "pause", (CampaignStatus.RUNNING,), change)

    async def resume(self, principal: Principal, campaign_id: UUID) -> Campaign:
        async def change(conn, repo: CampaignRepository, campaign: Campaign) -> None:
            # The error threshold counts from here: the failures that paused it are not new.
            await repo.update(principal.tenant_id, campaign_id, status=CampaignStatus.RUNNING.value,
                              status_reason=None, paused_at=None,
                              baseline_succeeded=campaign.counts[DeviceState.SUCCEEDED],
                              baseline_failed=campaign.counts[DeviceState.FAILED])
        return await self._change(principal, campaign_id, "resume", (CampaignStatus.PAUSED,), change)

    async def abort(self, principal: Principal, campaign_id: UUID) -> Campaign:
        async def change(conn, repo: CampaignRepository, campaign: Campaign) -> None:
            who = await repo.key_name(principal.tenant_id, principal.api_key_id) or principal.actor
            await repo.update(principal.tenant_id, campaign_id, status=CampaignStatus.ABORTED.value,
                              status_reason=f"aborted by {who}")
            await repo.move_devices(principal.tenant_id, campaign_id, STOPPED_BY_ABORT,
                                    DeviceState.CANCELLED, "aborted")
        return await self._change(principal, campaign_id, "abort", ABORTABLE, change)

    async def retry(self, principal: Principal, campaign_id: UUID,
                    device_ids: Sequence[UUID] | None = None) -> Campaign:
        async def change(conn, repo: CampaignRepository, campaign: Campaign) -> None:
            tenant_id = principal.tenant_id
            failed = await repo.failed_devices(tenant_id, campaign_id, device_ids)
            if not failed:
                raise Conflict("no failed devices to retry")
            busy = await repo.busy_elsewhere(tenant_id, campaign_id, failed, NAMED_IN_CONFLICT)
            if busy:
                raise _busy(busy)
            try:
                await repo.retry(tenant_id, campaign_id, failed, campaign.current_wave)
            except (asyncpg.UniqueViolationError, asyncpg.DeadlockDetectedError):
                raise Conflict("a device joined another active campaign meanwhile; try again") from None
            now = await self._campaign(conn, tenant_id, campaign_id)
            await repo.update(tenant_id, campaign_id, status=CampaignStatus.RUNNING.value, status_reason=None,
                              paused_at=None, finished_at=None,
                              baseline_succeeded=now.counts[DeviceState.SUCCEEDED],
                              baseline_failed=now.counts[DeviceState.FAILED])
        return await self._change(principal, campaign_id, "retry", RETRYABLE, change)

    async def cancel(self, principal: Principal, campaign_id: UUID,
                     device_ids: Sequence[UUID] | None = None) -> Campaign:
        async def change(conn, repo: CampaignRepository, campaign: Campaign) -> None:
            await repo.move_devices(principal.tenant_id, campaign_id, CANCELLED_BY_REQUEST,
                                    DeviceState.CANCELLED, "cancelled", device_ids)
        return await self._change(principal, campaign_id, "cancel", CANCELLABLE, change)

    # -- the common part of every change ---------------------------------------------------------

    async def _change(self, principal: Principal, campaign_id: UUID, action: str,
                      allowed: Sequence[CampaignStatus], change,
                      permission: Permission = Permission.RUN_CAMPAIGNS) -> Campaign:
        """Lock the campaign, check its status allows `action`, apply `change`, then audit and
        publish what it became, all in one transaction."""
        require(principal, permission, f"{action} campaigns")
        tenant_id = principal.tenant_id
        async with self.db.tenant_tx(tenant_id) as conn:
            before = await self._locked(conn, tenant_id, campaign_id, allowed, action)
            repo = CampaignRepository(conn)
            await change(conn, repo, before)
            await repo.bump(tenant_id, campaign_id, before.version)
            after = await self._campaign(conn, tenant_id, campaign_id)
            await record(conn, principal, f"campaign.{action}", "campaign", campaign_id,
                         {"status": before.status.value, "counts": before.counts},
                         {"status": after.status.value, "status_reason": after.status_reason,
                          "counts": after.counts})
            await publish(conn, tenant_id, CAMPAIGN_UPDATED, "campaign", campaign_id, _rendered(after))
            return after

    async def _locked(self, conn, tenant_id: UUID, campaign_id: UUID, allowed: Sequence[CampaignStatus],
                      action: str) -> Campaign:
        campaign = await self._campaign(conn, tenant_id, campaign_id, lock=True)
        if campaign.status not in allowed:
            raise Conflict(f"cannot {action} a campaign that is {campaign.status.value} "
                           f"(only one that is {' or '.join(s.value for s in allowed)})")
        return campaign

    async def _go(self, conn, repo: CampaignRepository, tenant_id: UUID, campaign: Campaign) -> None:
        """Started and approved (or needing no approval): wait for start_at, or run now."""
        if campaign.start_at is not None and campaign.start_at > self.clock():
            await repo.update(tenant_id, campaign.id, status=CampaignStatus.SCHEDULED.value, status_reason=None)
        else:
            await begin_running(conn, tenant_id, campaign.id)

    async def _campaign(self, conn, tenant_id: UUID, campaign_id: UUID, *, lock: bool = False) -> Campaign:
        repo = CampaignRepository(conn)
        row = await repo.campaign(tenant_id, campaign_id, lock=lock)
        if row is None:
            raise NotFound(f"campaign {campaign_id} not found")
        return campaign_from_rows(row, await repo.counts(tenant_id, [campaign_id]), self.clock())


def _rendered(campaign: Campaign) -> dict[str, Any]:
    """The campaign as the API shows it (events and audit entries carry the same)."""
    return msgspec.to_builtins(campaign)
