"""SQL of the rollout engine: campaigns it drives, devices' facts, their transitions and steps."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

from fleet.campaigns.repository import call_off_steps
from fleet.campaigns.windows import OpenHours
from fleet.commands.models import Operation
from fleet.commands.repository import NOTIFY_CHANNEL
from fleet.firmware.delivery import PACKAGE_URI_PATH

# The paths whose latest values decide a device's next move.
WATCHED_PATHS = ("/5/0/9", "/5/0/3", "/5/0/5", "/3/0/3")
_KEY = "d.tenant_id = $1 and d.campaign_id = $2"


def origin(campaign_id: UUID) -> str:
    return f"firmware:{campaign_id}"


class RolloutRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    # -- campaigns ----------------------------------------------------------------------------

    async def due_scheduled(self, now: datetime) -> list[asyncpg.Record]:
        return await self.conn.fetch(
            """select tenant_id, id, image_id from firmware_campaigns
               where status = 'scheduled' and start_at <= $1 order by start_at""", now)

    async def back_to_draft(self, tenant_id: UUID, campaign_id: UUID, reason: str) -> None:
        """A scheduled start refused (its image no longer verifies): a draft again, saying why."""
        await self.conn.execute(
            """update firmware_campaigns set status = 'draft', status_reason = $3, version = version + 1,
                      updated_at = now()
               where tenant_id = $1 and id = $2 and status = 'scheduled'""", tenant_id, campaign_id, reason)

    async def live(self) -> list[asyncpg.Record]:
        """Campaigns with something left to drive: running or paused ones, aborted ones whose
        last installs have not ended."""
        return await self.conn.fetch(
            """select tenant_id, id from firmware_campaigns
               where status in ('running', 'paused') or (status = 'aborted' and finished_at is null)
               order by created_at""")

    async def lock(self, tenant_id: UUID, campaign_id: UUID) -> asyncpg.Record | None:
        """The campaign, locked for this pass (a second pass on any node waits for this one),
        with its image's version and its city's time zone."""
        return await self.conn.fetchrow(
            """select c.*, i.version as target_version, t.timezone, t.slug
               from firmware_campaigns c
               join firmware_images i on i.tenant_id = c.tenant_id and i.id = c.image_id
               join tenants t on t.id = c.tenant_id
               where c.tenant_id = $1 and c.id = $2 for update of c""", tenant_id, campaign_id)

    async def counts(self, tenant_id: UUID, campaign_id: UUID) -> list[asyncpg.Record]:
        return await self.conn.fetch(
            f"""select d.wave, d.state, count(*) as n from firmware_campaign_devices d
                where {_KEY} group by d.wave, d.state""", tenant_id, campaign_id)

    async def set_status(self, tenant_id: UUID, campaign_id: UUID, status: str, reason: str | None, *,
                         finished: bool) -> None:
        await self.conn.execute(
            """update firmware_campaigns set status = $3, status_reason = $4,
                      paused_at = case when $3 = 'paused' then now() else paused_at end,
                      finished_at = case when $5 then now() else finished_at end,
                      version = version + 1, updated_at = now()
               where tenant_id = $1 and id = $2""", tenant_id, campaign_id, status, reason, finished)

    async def open_wave(self, tenant_id: UUID, campaign_id: UUID, wave: int) -> None:
        await self.conn.execute(
            f"""update firmware_campaign_devices d set state = 'waiting', state_since = now(), updated_at = now()
                where {_KEY} and d.wave = $3 and d.state = 'pending'""", tenant_id, campaign_id, wave)
        await self.conn.execute(
            """update firmware_campaigns set current_wave = $3, version = version + 1, updated_at = now()
               where tenant_id = $1 and id = $2""", tenant_id, campaign_id, wave)

    # -- devices ------------------------------------------------------------------------------

    async def facts(self, tenant_id: UUID, campaign_id: UUID) -> list[asyncpg.Record]:
        """Devices downloading, installing or verifying, with their step's command, their
        registration, their reported version and their latest critical alarm."""
        return await self.conn.fetch(
            f"""select d.device_id, d.state, d.state_since, d.step, d.step_at, d.previous_version, d.observing,
                       d.install_sent_at, d.returned_at, d.next_check_at,
                       c.status as command_status, c.error as command_error, c.sent_at as command_sent_at,
                       c.completed_at as command_completed_at,
                       coalesce(r.binding like '%Q%', false) as queue_mode, r.registered_at,
                       r.updated_at as registration_updated_at,
                       r.expires_at as registration_expires_at,
                       v.firmware_version, v.updated_at as firmware_at,
                       (select max(s.updated_at) from device_state s where s.device_id = d.device_id)
                           as last_report_at,
                       (select max(a.first_seen) from alarms a where a.tenant_id = d.tenant_id
                           and a.device_id = d.device_id and a.severity = 'critical') as critical_alarm_at
                from firmware_campaign_devices d
                join devices v on v.tenant_id = d.tenant_id and v.id = d.device_id
                left join commands c on c.id = d.command_id
                left join registrations r on r.device_id = d.device_id
                where {_KEY} and d.state in ('downloading', 'installing', 'verifying')""",
            tenant_id, campaign_id)

    async def readings(self, device_ids: Sequence[UUID]) -> list[asyncpg.Record]:
        return await self.conn.fetch(
            """select device_id, path, coalesce(v_num::text, v_text, v_bool::text) as value, updated_at
               from device_state where device_id = any($1::uuid[]) and path = any($2::text[])""",
            list(device_ids), list(WATCHED_PATHS))

    async def in_state(self, tenant_id: UUID, campaign_id: UUID, state: str, limit: int) -> list[UUID]:
        rows = await self.conn.fetch(
            f"""select d.device_id from firmware_campaign_devices d where {_KEY} and d.state = $3
                order by d.wave, d.state_since, d.device_id limit $4""", tenant_id, campaign_id, state, limit)
        return [r["device_id"] for r in rows]

    async def city_windows(self, tenant_id: UUID) -> list[OpenHours]:
        rows = await self.conn.fetch(
            "select starts, ends, weekdays from maintenance_windows where tenant_id = $1 and group_id is null",
            tenant_id)
        return [OpenHours(r["starts"], r["ends"], tuple(r["weekdays"])) for r in rows]

    async def group_windows(self, tenant_id: UUID, device_ids: Sequence[UUID]) -> dict[UUID, list[OpenHours]]:
        rows = await self.conn.fetch(
            """select m.device_id, w.starts, w.ends, w.weekdays
               from device_group_members m
               join maintenance_windows w on w.tenant_id = m.tenant_id and w.group_id = m.group_id
               where m.tenant_id = $1 and m.device_id = any($2::uuid[])""", tenant_id, list(device_ids))
        found: dict[UUID, list[OpenHours]] = {}
        for r in rows:
            found.setdefault(r["device_id"], []).append(OpenHours(r["starts"], r["ends"], tuple(r["weekdays"])))
        return found

    async def start_downloads(self, tenant_id: UUID, campaign_id: UUID, device_ids: Sequence[UUID],
                              target_version: str) -> tuple[list[UUID], list[UUID]]:
        """waiting -> downloading, at the step that reads object 5 first; remembers the version
        the device is on now (to tell a rollback). A device already on the target version (a
        retried one that came back late) is not told to install again: it is verified instead.
        Returns (downloading, verifying)."""
        rows = await self.conn.fetch(
            f"""update firmware_campaign_devices d
                set state = case when v.firmware_version = $4 then 'verifying' else 'downloading' end,
                    step = case when v.firmware_version = $4 then null else 'observe' end,
                    returned_at = case when v.firmware_version = $4 then now() end,
                    step_at = now(), state_since = now(), updated_at = now(), observing = null, delivery = null,
                    reason = null, detail = null, next_check_at = null, install_sent_at = null,
                    previous_version = case when v.firmware_version = $4 then d.previous_version
                                            else v.firmware_version end
                from devices v
                where {_KEY} and d.device_id = any($3::uuid[]) and d.state = 'waiting'
                  and v.tenant_id = d.tenant_id and v.id = d.device_id
                returning d.device_id, d.state""", tenant_id, campaign_id, list(device_ids), target_version)
        return ([r["device_id"] for r in rows if r["state"] == "downloading"],
                [r["device_id"] for r in rows if r["state"] == "verifying"])

    async def next_steps(self, tenant_id: UUID, campaign_id: UUID, device_ids: Sequence[UUID],
                         from_steps: Sequence[str], steps: Sequence[str], observing: Sequence[bool],
                         deliveries: Sequence[str | None], token_hashes: Sequence[bytes | None],
                         token_s: int) -> list[UUID]:
        rows = await self.conn.fetch(
            f"""update firmware_campaign_devices d set step = u.step, step_at = now(), updated_at = now(),
                       observing = u.observing, delivery = coalesce(u.delivery, d.delivery),
                       token_hash = u.token_hash,
                       token_expires_at = case when u.token_hash is not null
                                               then now() + make_interval(secs => $9) end
                from unnest($3::uuid[], $4::text[], $5::text[], $6::bool[], $7::text[], $8::bytea[])
                     as u(device_id, from_step, step, observing, delivery, token_hash)
                where {_KEY} and d.device_id = u.device_id and d.state = 'downloading' and d.step = u.from_step
                returning d.device_id""",
            tenant_id, campaign_id, list(device_ids), list(from_steps), list(steps), list(observing),
            list(deliveries), list(token_hashes), token_s)
        return [r["device_id"] for r in rows]

    async def start_installs(self, tenant_id: UUID, campaign_id: UUID, device_ids: Sequence[UUID]) -> list[UUID]:
        """downloaded -> installing: only the devices this statement moves get their Update, so
        however many passes run, each device is told once. A device whose version was unknown
        when its download began (it had never registered) has registered since: the version it
        runs now is the one a rollback brings back."""
        rows = await self.conn.fetch(
            f"""update firmware_campaign_devices d set state = 'installing', step = 'execute', step_at = now(),
                       install_sent_at = now(), state_since = now(), updated_at = now(), next_check_at = null,
                       previous_version = coalesce(d.previous_version, v.firmware_version)
                from devices v
                where {_KEY} and d.device_id = any($3::uuid[]) and d.state = 'downloaded'
                  and v.tenant_id = d.tenant_id and v.id = d.device_id
                returning d.device_id""", tenant_id, campaign_id, list(device_ids))
        return [r["device_id"] for r in rows]

    async def registered_secure(self, tenant_id: UUID, device_ids: Sequence[UUID]) -> set[UUID]:
        """Which of these devices registered over coaps (their Package URI is coaps:// too)."""
        rows = await self.conn.fetch(
            "select device_id from registrations where tenant_id = $1 and device_id = any($2::uuid[]) and secure",
            tenant_id, list(device_ids))
        return {r["device_id"] for r in rows}

    async def due_polls(self, tenant_id: UUID, campaign_id: UUID, device_ids: Sequence[UUID],
                        poll_s: int) -> list[UUID]:
        rows = await self.conn.fetch(
            f"""update firmware_campaign_devices d set next_check_at = now() + make_interval(secs => $4)
                where {_KEY} and d.device_id = any($3::uuid[])
                  and (d.next_check_at is null or d.next_check_at <= now())
                returning d.device_id""", tenant_id, campaign_id, list(device_ids), poll_s)
        return [r["device_id"] for r in rows]

    async def advance(self, tenant_id: UUID, campaign_id: UUID, device_ids: Sequence[UUID],
                      from_state: str, to_state: str) -> list[asyncpg.Record]:
        """A step done: downloaded (the token stops working), verifying (back on the target
        version: `returned_at`) or succeeded (an earlier failure's alarm is cleared). What is
        left of the step's command is called off."""
        return await self.conn.fetch(
            f"""with moved as (
                    update firmware_campaign_devices d set state = $4, reason = null, detail = null,
                           state_since = now(), updated_at = now(), token_hash = null, token_expires_at = null,
                           next_check_at = null,
                           returned_at = case when $4 = 'verifying' then now() else d.returned_at end,
                           alarm_todo = case when $4 = 'succeeded' then 'clear' else d.alarm_todo end
                    where {_KEY} and d.device_id = any($5::uuid[]) and d.state = $3
                    returning d.device_id, d.wave, d.state, d.reason, d.detail, d.command_id),
                called_off as ({call_off_steps("moved", "'its step is done'")})
                select device_id, wave, state, reason, detail from moved""",
            tenant_id, campaign_id, from_state, to_state, list(device_ids))

    async def fail(self, tenant_id: UUID, campaign_id: UUID, device_ids: Sequence[UUID],
                   from_states: Sequence[str], reasons: Sequence[str], details: Sequence[str]) -> list[asyncpg.Record]:
        """Devices failed with their reasons; a step of theirs still queued is called off."""
        return await self.conn.fetch(
            f"""with failed as (
                    update firmware_campaign_devices d set state = 'failed', reason = f.reason, detail = f.detail,
                           state_since = now(), updated_at = now(), token_hash = null, token_expires_at = null,
                           next_check_at = null, alarm_todo = 'raise'
                    from unnest($3::uuid[], $4::text[], $5::text[], $6::text[])
                         as f(device_id, from_state, reason, detail)
                    where {_KEY} and d.device_id = f.device_id and d.state = f.from_state
                    returning d.device_id, d.wave, d.state, d.reason, d.detail, d.command_id),
                called_off as ({call_off_steps("failed", "'its update failed'")})
                select device_id, wave, state, reason, detail from failed""",
            tenant_id, campaign_id, list(device_ids), list(from_states), list(reasons), list(details))

    # -- commands -----------------------------------------------------------------------------

    async def insert_steps(self, tenant_id: UUID, campaign_id: UUID, operation: Operation, path: str,
                           device_ids: Sequence[UUID], values: Sequence[Any], expires_in: timedelta,
                           *, remember: bool = True) -> dict[UUID, UUID]:
        """One batch of device steps (each device may get its own value, e.g. its Package URI),
        the dispatchers woken; with `remember`, each becomes its device's step under way."""
        if not device_ids:
            return {}
        # The batch shows a value its devices share; never a Package URI, which holds its
        # device's download token (fleet.firmware.delivery.without_token).
        same = values[0] if path != PACKAGE_URI_PATH and all(v == values[0] for v in values) else None
        row = await self.conn.fetchrow(
            f"""with batch as (
                    insert into command_batches (tenant_id, operation, path, value, target, device_count,
                                                 created_by, origin, expires_at)
                    values ($1, $2, $3, $4, $5, $6, null, $7, now() + $8::interval) returning id, expires_at),
                added as (
                    insert into commands (batch_id, tenant_id, device_id, operation, path, value, expires_at)
                    select batch.id, $1, u.device_id, $2, $3, u.value, batch.expires_at
                    from batch, unnest($9::uuid[], $10::jsonb[]) as u(device_id, value)
                    returning device_id, id)
                select coalesce(array_agg(device_id), '{{}}'), coalesce(array_agg(id), '{{}}'),
                       pg_notify('{NOTIFY_CHANNEL}', '')
                from added""",
            tenant_id, operation.value, path, same, {"campaign_id": str(campaign_id)}, len(device_ids),
            origin(campaign_id), expires_in, list(device_ids), list(values))
        ids = dict(zip(row[0], row[1], strict=True))
        if remember:
            await self.conn.execute(
                f"""update firmware_campaign_devices d set command_id = u.command_id
                    from unnest($3::uuid[], $4::uuid[]) as u(device_id, command_id)
                    where {_KEY} and d.device_id = u.device_id""",
                tenant_id, campaign_id, list(ids), list(ids.values()))
        return ids

    # -- alarms (an outbox: see migration 0025) --------------------------------------------------

    async def alarms_due(self, limit: int) -> list[asyncpg.Record]:
        return await self.conn.fetch(
            """select tenant_id, campaign_id, device_id, alarm_todo, reason, detail
               from firmware_campaign_devices where alarm_todo is not null limit $1""", limit)

    async def alarms_handed_over(self, rows: Sequence[asyncpg.Record]) -> None:
        await self.conn.execute(
            """update firmware_campaign_devices d set alarm_todo = null
               from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[]) as u(tenant_id, campaign_id, device_id, todo)
               where d.tenant_id = u.tenant_id and d.campaign_id = u.campaign_id and d.device_id = u.device_id
                 and d.alarm_todo = u.todo""",
            [r["tenant_id"] for r in rows], [r["campaign_id"] for r in rows],
            [r["device_id"] for r in rows], [r["alarm_todo"] for r in rows])
