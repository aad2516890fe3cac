"""SQL for the campaigns people manage: campaigns, each device's part, timelines and windows."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, time
from typing import Any
from uuid import UUID

import asyncpg

from fleet.campaigns.models import (CampaignDevice, CampaignStatus, Delivery, DeviceState,
                                    MaintenanceWindow, Step)

_CAMPAIGN_COLUMNS = "c.*, i.version as image_version"
_CAMPAIGN_FROM = """firmware_campaigns c
    join firmware_images i on i.tenant_id = c.tenant_id and i.id = c.image_id"""
_DEVICE_COLUMNS = """cd.device_id, cd.wave, cd.state, cd.reason, cd.detail, cd.delivery,
                     cd.previous_version, cd.attempt, cd.state_since, d.endpoint"""
_WINDOW_COLUMNS = "id, group_id, name, starts, ends, weekdays"
# Columns `update` may set: fixed here, never taken from input.
_UPDATABLE = frozenset({"status", "status_reason", "approved_by", "approved_at", "started_by",
                        "started_at", "paused_at", "finished_at", "current_wave",
                        "baseline_succeeded", "baseline_failed"})


def call_off_steps(moved: str, error: str) -> str:
    """An UPDATE (for a CTE) calling off the steps (commands) of the devices CTE `moved` returned
    as `command_id`, once their state moved on: a queued one is cancelled with `error` (an SQL
    expression); one a dispatcher is sending stays `sent` (one exchange per device at a time)
    but expires now, so a lost answer is not retried. Otherwise a Package URI write retried
    after its device had downloaded would make it download again, from a token that no longer
    works, and then refuse its Update."""
    return f"""update commands set
                   status = case when status = 'queued' then 'cancelled' else status end,
                   completed_at = case when status = 'queued' then now() else completed_at end,
                   error = case when status = 'queued' then {error} else error end,
                   expires_at = least(expires_at, now())
               where id in (select command_id from {moved}) and status in ('queued', 'sent')"""


def device_from_row(row: asyncpg.Record) -> CampaignDevice:
    return CampaignDevice(row["device_id"], row["wave"], DeviceState(row["state"]), row["reason"],
                          row["detail"], Delivery(row["delivery"]) if row["delivery"] else None,
                          row["previous_version"], row["attempt"], row["state_since"], row["endpoint"])


def window_from_row(row: asyncpg.Record) -> MaintenanceWindow:
    return MaintenanceWindow(row["id"], row["group_id"], row["name"], row["starts"], row["ends"],
                             tuple(row["weekdays"]))


async def begin_running(conn: asyncpg.Connection, tenant_id: UUID, campaign_id: UUID) -> bool:
    """A started (or approved, or scheduled and now due) campaign runs: its canary wave's devices
    wait for their turn. Returns False when the campaign was not in a state to begin (already
    running, paused, aborted, ...), changing nothing. The engine calls it for scheduled
    campaigns at their start_at; the caller publishes the change."""
    began = await conn.fetchval(
        """update firmware_campaigns
           set status = 'running', status_reason = null, current_wave = 0,
               started_at = coalesce(started_at, now()), version = version + 1, updated_at = now()
           where tenant_id = $1 and id = $2 and status in ('draft', 'awaiting_approval', 'scheduled')
           returning true""", tenant_id, campaign_id)
    if not began:
        return False
    await conn.execute(
        """update firmware_campaign_devices
           set state = 'waiting', state_since = now(), updated_at = now()
           where tenant_id = $1 and campaign_id = $2 and wave = 0 and state = 'pending'""",
        tenant_id, campaign_id)
    return True


class CampaignRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    # -- campaigns ---------------------------------------------------------------------------

    async def insert(self, tenant_id: UUID, image_id: UUID, name: str, target: dict[str, Any],
                     settings: dict[str, Any], start_at: datetime | None, created_by: UUID | None) -> UUID:
        return await self.conn.fetchval(
            """insert into firmware_campaigns (tenant_id, image_id, name, target, settings, start_at, created_by)
               values ($1, $2, $3, $4, $5, $6, $7) returning id""",
            tenant_id, image_id, name, target, settings, start_at, created_by)

    async def set_sizes(self, tenant_id: UUID, campaign_id: UUID, device_count: int, wave_count: int) -> None:
        await self.conn.execute(
            """update firmware_campaigns set device_count = $3, wave_count = $4
               where tenant_id = $1 and id = $2""", tenant_id, campaign_id, device_count, wave_count)

    async def campaign(self, tenant_id: UUID, campaign_id: UUID, *, lock: bool = False) -> asyncpg.Record | None:
        return await self.conn.fetchrow(
            f"""select {_CAMPAIGN_COLUMNS} from {_CAMPAIGN_FROM}
                where c.tenant_id = $1 and c.id = $2 {'for update of c' if lock else ''}""",
            tenant_id, campaign_id)

    async def campaigns(self, tenant_id: UUID, status: CampaignStatus | None,
                        before: tuple[datetime, UUID] | None, limit: int) -> list[asyncpg.Record]:
        """Newest first; `before` is the (created_at, id) of the last campaign already shown."""
        return await self.conn.fetch(
            f"""select {_CAMPAIGN_COLUMNS} from {_CAMPAIGN_FROM}
                where c.tenant_id = $1 and ($2::text is null or c.status = $2)
                  and ($3::timestamptz is null or (c.created_at, c.id) < ($3, $4::uuid))
                order by c.created_at desc, c.id desc limit $5""",
            tenant_id, status.value if status else None, before[0] if before else None,
            before[1] if before else None, limit)

    async def counts(self, tenant_id: UUID, campaign_ids: Sequence[UUID]) -> list[asyncpg.Record]:
        """Devices per campaign, wave and state."""
        return await self.conn.fetch(
            """select campaign_id, wave, state, count(*)::int as n from firmware_campaign_devices
               where tenant_id = $1 and campaign_id = any($2::uuid[])
               group by campaign_id, wave, state""", tenant_id, list(campaign_ids))

    async def update(self, tenant_id: UUID, campaign_id: UUID, **columns: Any) -> None:
        """Set the named columns (from `_UPDATABLE`); `bump` makes the change a new version."""
        unknown = set(columns) - _UPDATABLE
        if unknown:
            raise ValueError(f"not an updatable campaign column: {sorted(unknown)}")
        sets = "".join(f", {name} = ${n}" for n, name in enumerate(columns, start=3))
        await self.conn.execute(
            f"""update firmware_campaigns set updated_at = now(){sets}
                where tenant_id = $1 and id = $2""", tenant_id, campaign_id, *columns.values())

    async def bump(self, tenant_id: UUID, campaign_id: UUID, seen_version: int) -> None:
        """One new version per change: nothing when the change already made one (begin_running)."""
        await self.conn.execute(
            """update firmware_campaigns set version = version + 1, updated_at = now()
               where tenant_id = $1 and id = $2 and version = $3""", tenant_id, campaign_id, seen_version)

    async def delete(self, tenant_id: UUID, campaign_id: UUID) -> None:
        await self.conn.execute("delete from firmware_campaigns where tenant_id = $1 and id = $2",
                                tenant_id, campaign_id)

    async def approval_required(self, tenant_id: UUID) -> bool:
        return bool(await self.conn.fetchval(
            "select firmware_approval_required from tenants where id = $1", tenant_id))

    async def key_name(self, tenant_id: UUID, key_id: UUID | None) -> str | None:
        if key_id is None:
            return None
        return await self.conn.fetchval("select name from api_keys where tenant_id = $1 and id = $2",
                                        tenant_id, key_id)

    # -- devices ---------------------------------------------------------------------------------

    async def candidates(self, tenant_id: UUID, campaign_id: UUID, device_ids: Sequence[UUID]) -> list[asyncpg.Record]:
        """The targeted devices with what decides whether they take part, in the campaign's
        stable random order (the same campaign and devices always give the same order)."""
        return await self.conn.fetch(
            """select d.id, d.manufacturer, d.model, d.firmware_version, d.status
               from unnest($2::uuid[]) t (id) join devices d on d.tenant_id = $1 and d.id = t.id
               order by md5($3::text || d.id::text)""", tenant_id, list(device_ids), str(campaign_id))

    async def busy_elsewhere(self, tenant_id: UUID, campaign_id: UUID, device_ids: Sequence[UUID],
                             limit: int = 20) -> list[asyncpg.Record]:
        """Devices of `device_ids` that hold another campaign (their one active campaign), with
        that campaign and how many such devices there are in all (`total`)."""
        return await self.conn.fetch(
            """select device_id, campaign_id, count(*) over ()::int as total
               from firmware_campaign_devices
               where tenant_id = $1 and device_id = any($2::uuid[]) and active and campaign_id <> $3
               order by device_id limit $4""", tenant_id, list(device_ids), campaign_id, limit)

    async def insert_devices(self, tenant_id: UUID, campaign_id: UUID, device_ids: Sequence[UUID],
                             waves: Sequence[int], states: Sequence[str], reasons: Sequence[str | None],
                             details: Sequence[str | None]) -> None:
        """Every targeted device in one statement (taking part, or skipped with its reason)."""
        await self.conn.execute(
            """insert into firmware_campaign_devices
                   (tenant_id, campaign_id, device_id, wave, state, reason, detail, previous_version)
               select $1, $2, u.device_id, u.wave, u.state, u.reason, u.detail, d.firmware_version
               from unnest($3::uuid[], $4::int[], $5::text[], $6::text[], $7::text[])
                    u (device_id, wave, state, reason, detail)
               join devices d on d.tenant_id = $1 and d.id = u.device_id
               -- One order for every campaign: two taking the same devices at once wait on
               -- each other's index entries in the same order, never in a deadlock.
               order by u.device_id""",
            tenant_id, campaign_id, list(device_ids), list(waves), list(states), list(reasons), list(details))

    async def move_devices(self, tenant_id: UUID, campaign_id: UUID, from_states: Sequence[DeviceState],
                           to_state: DeviceState, reason: str | None,
                           device_ids: Sequence[UUID] | None = None) -> int:
        """Devices in `from_states` (of `device_ids`, when given) go to `to_state`; how many did.
        A step of theirs still queued (a Package URI, a push, a sleeping device's Update) is
        called off with them, so an abort starts no download from that moment; one already
        on its way to the device cannot be recalled."""
        return await self.conn.fetchval(
            f"""with moved as (
                   update firmware_campaign_devices
                   set state = $4, reason = $5, detail = null, state_since = now(), updated_at = now(),
                       token_hash = null, token_expires_at = null
                   where tenant_id = $1 and campaign_id = $2 and state = any($3::text[])
                     and ($6::uuid[] is null or device_id = any($6::uuid[]))
                   returning command_id),
               called_off as ({call_off_steps("moved", "coalesce('firmware campaign: ' || $5, 'called off')")})
               select count(*)::int from moved""",
            tenant_id, campaign_id, [s.value for s in from_states], to_state.value, reason,
            list(device_ids) if device_ids is not None else None)

    async def failed_devices(self, tenant_id: UUID, campaign_id: UUID,
                             device_ids: Sequence[UUID] | None = None) -> list[UUID]:
        rows = await self.conn.fetch(
            """select device_id from firmware_campaign_devices
               where tenant_id = $1 and campaign_id = $2 and state = 'failed'
                 and ($3::uuid[] is null or device_id = any($3::uuid[]))""",
            tenant_id, campaign_id, list(device_ids) if device_ids is not None else None)
        return [r["device_id"] for r in rows]

    async def retry(self, tenant_id: UUID, campaign_id: UUID, device_ids: Sequence[UUID], wave: int) -> int:
        """Failed devices wait again, in `wave` (the one under way), for another attempt."""
        return await self.conn.fetchval(
            """with retried as (
                   update firmware_campaign_devices
                   set state = 'waiting', wave = $4, attempt = attempt + 1, reason = null, detail = null,
                       command_id = null, token_hash = null, token_expires_at = null,
                       install_sent_at = null, returned_at = null, next_check_at = null,
                       state_since = now(), updated_at = now()
                   where tenant_id = $1 and campaign_id = $2 and state = 'failed'
                     and device_id = any($3::uuid[])
                   returning 1)
               select count(*)::int from retried""", tenant_id, campaign_id, list(device_ids), wave)

    async def devices(self, tenant_id: UUID, campaign_id: UUID, state: DeviceState | None, wave: int | None,
                      after: tuple[int, UUID] | None, limit: int) -> list[CampaignDevice]:
        """One page in (wave, device id) order; `after` is the last (wave, device id) shown."""
        rows = await self.conn.fetch(
            f"""select {_DEVICE_COLUMNS}
                from firmware_campaign_devices cd
                join devices d on d.tenant_id = cd.tenant_id and d.id = cd.device_id
                where cd.tenant_id = $1 and cd.campaign_id = $2
                  and ($3::text is null or cd.state = $3)
                  -- Skipped devices are in no wave (their column says 0).
                  and ($4::int is null or (cd.wave = $4 and cd.state <> 'skipped'))
                  and ($5::int is null or (cd.wave, cd.device_id) > ($5, $6::uuid))
                order by cd.wave, cd.device_id limit $7""",
            tenant_id, campaign_id, state.value if state else None, wave,
            after[0] if after else None, after[1] if after else None, limit)
        return [device_from_row(r) for r in rows]

    async def device(self, tenant_id: UUID, campaign_id: UUID, device_id: UUID) -> CampaignDevice | None:
        row = await self.conn.fetchrow(
            f"""select {_DEVICE_COLUMNS}
                from firmware_campaign_devices cd
                join devices d on d.tenant_id = cd.tenant_id and d.id = cd.device_id
                where cd.tenant_id = $1 and cd.campaign_id = $2 and cd.device_id = $3""",
            tenant_id, campaign_id, device_id)
        return device_from_row(row) if row else None

    async def steps(self, tenant_id: UUID, campaign_id: UUID, device_id: UUID) -> list[Step]:
        rows = await self.conn.fetch(
            """select at, state, reason, detail from firmware_device_steps
               where tenant_id = $1 and campaign_id = $2 and device_id = $3 order by id""",
            tenant_id, campaign_id, device_id)
        return [Step(r["at"], DeviceState(r["state"]), r["reason"], r["detail"]) for r in rows]

    # -- maintenance windows ---------------------------------------------------------------------

    async def group_exists(self, tenant_id: UUID, group_id: UUID) -> bool:
        return bool(await self.conn.fetchval(
            "select true from device_groups where tenant_id = $1 and id = $2", tenant_id, group_id))

    async def insert_window(self, tenant_id: UUID, group_id: UUID | None, name: str, starts: time,
                            ends: time, weekdays: Sequence[int]) -> MaintenanceWindow:
        row = await self.conn.fetchrow(
            f"""insert into maintenance_windows (tenant_id, group_id, name, starts, ends, weekdays)
                values ($1, $2, $3, $4, $5, $6::smallint[]) returning {_WINDOW_COLUMNS}""",
            tenant_id, group_id, name, starts, ends, sorted(set(weekdays)))
        return window_from_row(row)

    async def windows(self, tenant_id: UUID, group_id: UUID | None) -> list[MaintenanceWindow]:
        rows = await self.conn.fetch(
            f"""select {_WINDOW_COLUMNS} from maintenance_windows
                where tenant_id = $1 and ($2::uuid is null or group_id = $2)
                order by group_id nulls first, starts, id""", tenant_id, group_id)
        return [window_from_row(r) for r in rows]

    async def delete_window(self, tenant_id: UUID, window_id: UUID) -> MaintenanceWindow | None:
        row = await self.conn.fetchrow(
            f"delete from maintenance_windows where tenant_id = $1 and id = $2 returning {_WINDOW_COLUMNS}",
            tenant_id, window_id)
        return window_from_row(row) if row else None
