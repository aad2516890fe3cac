"""A campaign's own progress in a rollout pass: its error threshold, its next wave, its end."""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

import asyncpg
import structlog

from fleet.audit.repository import AuditRepository
from fleet.campaigns.models import FINAL_STATES, STOPPED_BY_ABORT, CampaignStatus, DeviceState
from fleet.campaigns.repository import CampaignRepository
from fleet.campaigns.rollout_steps import error_verdict, wave_done, wave_held

if TYPE_CHECKING:
    from fleet.campaigns.rollout import CampaignPass

log = structlog.get_logger(__name__)

# Left out of a wave's size: they never had a chance to succeed.
_NOT_COUNTED = (DeviceState.SKIPPED, DeviceState.CANCELLED)
# Who the audit log names for what the engine decided by itself.
SYSTEM_ACTOR = "system:firmware-rollout"
# What the audit log and the event stream call a campaign, as people's changes do
# (fleet.campaigns.service), so one campaign's history is one query.
SUBJECT = "campaign"


async def audit(conn: asyncpg.Connection, tenant_id: UUID, action: str, campaign_id: UUID,
                before: dict, after: dict) -> None:
    """An entry for a change the engine made by itself: no key, the system as the actor."""
    await AuditRepository(conn).append(tenant_id, None, SYSTEM_ACTOR, action, SUBJECT,
                                       str(campaign_id), before, after, None)


async def advance_campaign(p: CampaignPass, status: CampaignStatus) -> CampaignStatus:
    """Stop on the error threshold, open the next waves, finish; returns the status now."""
    campaign, thresholds = p.campaign, p.settings.thresholds
    counts = await p.counts()
    reason = campaign["status_reason"]
    if status is CampaignStatus.RUNNING:
        verdict = error_verdict(counts[DeviceState.SUCCEEDED], counts[DeviceState.FAILED],
                                campaign["baseline_succeeded"], campaign["baseline_failed"], thresholds)
        if verdict is not None:
            reason = verdict
            status = CampaignStatus.ABORTED if thresholds.on_error == "abort" else CampaignStatus.PAUSED
            if status is CampaignStatus.ABORTED:
                await CampaignRepository(p.conn).move_devices(p.tenant_id, p.campaign_id, STOPPED_BY_ABORT,
                                                              DeviceState.CANCELLED, "aborted")
            await p.repo.set_status(p.tenant_id, p.campaign_id, status, verdict, finished=False)
            action = "abort" if status is CampaignStatus.ABORTED else "pause"
            log.info("firmware campaign stopped by its error threshold", campaign=str(p.campaign_id),
                     status=status.value, reason=verdict)
            await audit(p.conn, p.tenant_id, f"campaign.{action}", p.campaign_id,
                        {"status": "running"}, {"status": status.value, "reason": verdict})
            p.changed = True
    if status is CampaignStatus.RUNNING:
        wave = campaign["current_wave"]
        while wave + 1 < campaign["wave_count"]:
            in_wave = await p.counts(wave)
            size = sum(n for state, n in in_wave.items() if state not in _NOT_COUNTED)
            if not wave_done(size, in_wave[DeviceState.SUCCEEDED], thresholds.success_percent):
                held = wave_held(wave, size, in_wave[DeviceState.SUCCEEDED], in_wave[DeviceState.FAILED],
                                 thresholds.success_percent)
                # Said once, and never over a person's reason; retry and resume clear it.
                if held is not None and reason is None:
                    await p.repo.set_status(p.tenant_id, p.campaign_id, status, held, finished=False)
                    log.info("firmware campaign held by its success threshold", campaign=str(p.campaign_id),
                             reason=held)
                    p.changed = True
                break
            wave += 1
            await p.repo.open_wave(p.tenant_id, p.campaign_id, wave)
            log.debug("firmware campaign wave opened", campaign=str(p.campaign_id), wave=wave)
            p.changed = True
    counts = await p.counts()
    if any(n for state, n in counts.items() if state not in FINAL_STATES):
        return status
    if status is CampaignStatus.RUNNING:
        await p.repo.set_status(p.tenant_id, p.campaign_id, CampaignStatus.COMPLETED, None, finished=True)
        log.info("firmware campaign completed", campaign=str(p.campaign_id),
                 succeeded=counts[DeviceState.SUCCEEDED], failed=counts[DeviceState.FAILED])
        await audit(p.conn, p.tenant_id, "campaign.complete", p.campaign_id, {"status": "running"},
                    {"status": "completed", "counts": {s.value: counts.get(s, 0) for s in DeviceState}})
        p.changed = True
        return CampaignStatus.COMPLETED
    if status is CampaignStatus.ABORTED and campaign["finished_at"] is None:
        # Its last installs ended: the aborted campaign is over.
        await p.repo.set_status(p.tenant_id, p.campaign_id, status, reason, finished=True)
        p.changed = True
    return status
