"""SQL for command batches and device commands: insert, claim with SKIP LOCKED, complete, expire."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

from fleet.commands.hosting import PATH_NOT_HOSTED
from fleet.commands.models import Batch, CommandQuery, CommandStatus, DeviceCommand, Operation, Outcome, RequestedCommand
from fleet.events.models import COMMAND_FINISHED
from fleet.events.repository import INSERT_EVENTS
from fleet.metrics import command_targets_finished

NOTIFY_CHANNEL = "fleet_commands"
_COMMAND_COLUMNS = ("id, batch_id, tenant_id, device_id, operation, path, value, status, attempts, "
                    "expires_at, result, error, created_at, sent_at, completed_at")
# The same, of `commands c` in a join.
_COMMAND_COLUMNS_OF_C = ", ".join("c." + column.strip() for column in _COMMAND_COLUMNS.split(","))


# Commands finishing are published as `command.finished`: one event per command for batches
# of up to this many devices (an operator's command to a few devices, followed on a dashboard),
# one per batch, when its last command finishes, for larger ones (a dimming push of 10,000
# lights is one event, not 10,000: measured, per-command events more than doubled the cost of
# recording outcomes, and no listener wants them one by one).
EVENT_PER_COMMAND_UP_TO = 100
# A firmware Update (Execute /5/0/2) is told to a device at most once: a failed or unanswered
# one is never tried again (the device may have begun installing), and one a node claimed and
# then died with is failed, not queued again. The rollout waits for the device instead.
ONCE_ONLY = "(c.operation = 'execute' and c.path = '/5/0/2')"
OUTCOME_UNKNOWN = "outcome unknown after a node stopped"
# How long a node's heartbeat may be missing before other nodes serve its devices (the default
# of FLEET_NODE_TIMEOUT_S).
NODE_TIMEOUT = timedelta(seconds=30)
# (slot, slots): of a node's device edge processes sharing a port, the one a device's
# datagrams reach is slot `source port % slots` (protocols.coap.steering); only that one can
# hear its answers, so only that one takes it over from a stopped node. A lone process: (0, 1).
Slot = tuple[int, int]
ONLY_SLOT: Slot = (0, 1)
# Follows a CTE `done` (with operation and status): what of it finished, as a jsonb list of
# [operation, status, n] for the metrics (fleet_command_targets_finished_total).
_TALLY_FINISHED = """coalesce((select jsonb_agg(jsonb_build_array(operation, status, n)) from (
        select operation, status, count(*) as n from done where status <> 'queued'
        group by operation, status) t), jsonb_build_array())"""
_FINISHED_COLUMNS = "c.id, c.batch_id, c.tenant_id, c.device_id, c.operation, c.path, c.status, c.attempts, " \
                    "c.result, c.error, c.completed_at"
# Follows a CTE `done` of finished commands (_FINISHED_COLUMNS) and takes the threshold as $n;
# publishes the small batches' commands; answers how many changed and the large batches touched.
_PUBLISH_FINISHED = f"""small as (
        select d.* from done d join command_batches b on b.id = d.batch_id
        where d.status <> 'queued' and b.device_count <= {{threshold}}),
    published as (
        {INSERT_EVENTS}
        select tenant_id, '{COMMAND_FINISHED}', 'command', id::text, jsonb_build_object(
            'command_id', id, 'batch_id', batch_id, 'device_id', device_id, 'operation', operation,
            'path', path, 'status', status, 'attempts', attempts, 'result', result, 'error', error,
            'completed_at', completed_at)
        from small)
    select (select count(*) from done) as changed, {_TALLY_FINISHED} as finished, array(
        select distinct d.batch_id from done d join command_batches b on b.id = d.batch_id
        where d.status <> 'queued' and b.device_count > {{threshold}}) as large_batches"""


# Why a queued command of `commands c` waits (WaitingReason), given its device's registration
# `r` (left joined): the dispatcher's claim conditions, in its order (claim_due).
WAITING_REASON = """case when c.status <> 'queued' then null
        when c.attempts > 0 and c.next_attempt_at > now() then 'backing_off'
        when r.device_id is null then 'not_registered'
        when r.queue_mode then 'queue_mode'
        when exists (select 1 from commands e where e.device_id = c.device_id and e.id <> c.id
                       and (e.status = 'sent' or (e.status = 'queued' and (e.created_at, e.id) < (c.created_at, c.id))))
            then 'behind_another'
        else 'due' end as waiting_reason,
    case when c.status = 'queued' and c.attempts > 0 and c.next_attempt_at > now()
         then c.next_attempt_at end as next_attempt_at"""


def batch_from_row(row: asyncpg.Record, counts: dict[str, int], commands: list[DeviceCommand]) -> Batch:
    return Batch(row["id"], Operation(row["operation"]), row["path"], row["value"], row["target"],
                 row["device_count"], row["origin"], row["created_at"], row["expires_at"],
                 {s.value: counts.get(s.value, 0) for s in CommandStatus}, commands, row["created_by"])


def command_from_row(row: asyncpg.Record) -> DeviceCommand:
    return DeviceCommand(
        id=row["id"], batch_id=row["batch_id"], tenant_id=row["tenant_id"], device_id=row["device_id"],
        operation=Operation(row["operation"]), path=row["path"], value=row["value"],
        status=CommandStatus(row["status"]), attempts=row["attempts"], expires_at=row["expires_at"],
        result=row["result"], error=row["error"], created_at=row["created_at"],
        sent_at=row["sent_at"], completed_at=row["completed_at"],
        waiting_reason=row.get("waiting_reason"), next_attempt_at=row.get("next_attempt_at"))


def claim_settings(*, one_device: bool) -> list[str]:
    """How a claim runs (as `name = value`, for SET or SET LOCAL).

    - For the whole queue, walk `commands_due` in `next_attempt_at` order and stop at the
      limit (a claim for one device finds its few commands by `commands_device`). Estimated from
      statistics taken while the queue was empty, PostgreSQL would rather fetch every queued
      command, test each (its device, anything else in flight) and sort them all, for every
      claim: 50 ms for 256 of 10,000 at rest, up to a second under load, the dispatcher starving
      meanwhile. Without bitmap scans and sorts, the ordered index scan is the only plan left.
    - Custom plans, for the table as it is now (see `_plan_for_today`).
    - No wait for the commit to reach the disk. Were it lost in a crash, its commands would be
      `queued` again and sent again; after a crash they are sent again anyway (`sent` rows of
      a dead node are recovered), so durability buys nothing here, while the dispatcher waits
      on every claim.
    """
    settings = ["synchronous_commit = off", "plan_cache_mode = force_custom_plan"]
    if not one_device:
        settings += ["enable_bitmapscan = off", "enable_sort = off"]
    return settings


async def prepare_claimer(conn: asyncpg.Connection) -> None:
    """Set a connection up for whole-queue claims for the rest of its session: each claim is
    then one statement in one round trip (`claim_due(..., prepared=True)`), not four."""
    await conn.execute("; ".join(f"set {setting}" for setting in claim_settings(one_device=False)))


async def _plan_for_today(conn: asyncpg.Connection) -> None:
    """Plan the next statements for the table as it is now, not as it was when first prepared.

    The dispatcher runs its claim and complete statements thousands of times on pooled
    connections. PostgreSQL soon caches a generic plan for them, made while `commands` was
    small, and keeps it until the table is next analyzed: a push of 10,000 commands then ran
    one claim for 30 s on sequential scans. Custom plans cost a fraction of a millisecond.
    """
    await conn.execute("set local plan_cache_mode = force_custom_plan")


class CommandRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def insert_batch(self, tenant_id: UUID, operation: Operation, path: str, value: Any,
                           target: dict[str, Any], device_ids: Sequence[UUID], created_by: UUID | None,
                           origin: str, expires_at: datetime) -> UUID:
        batch_id, _ = await self.insert_batch_with_ids(tenant_id, operation, path, value, target, device_ids,
                                                       created_by, origin, expires_at, return_ids=False)
        return batch_id

    async def insert_batch_with_ids(self, tenant_id: UUID, operation: Operation, path: str, value: Any,
                                    target: dict[str, Any], device_ids: Sequence[UUID], created_by: UUID | None,
                                    origin: str, expires_at: datetime, *,
                                    return_ids: bool = True) -> tuple[UUID, dict[UUID, UUID]]:
        """The batch and its commands; with `return_ids`, also each device's command id.

        Superseding, batch, commands and the dispatchers' wake-up are one statement: the
        scheduler writes a push in chunks on an event loop busy delivering the earlier ones,
        where every round trip waits its turn.

        A newer write of the same resource supersedes one still waiting (a light that was
        offline through three schedule steps needs only the last level). The queue is mostly
        empty: the one-time `exists` on its partial index spares thousands of per-device probes
        then. The statement's parts share one snapshot, so the commands it adds are not among
        those it supersedes.
        """
        # An aggregate: one row, however many commands. One pass over `added`, so both arrays
        # list its rows in the same order.
        ids = ("coalesce(array_agg(device_id), '{}'), coalesce(array_agg(id), '{}')" if return_ids
               else "'{}'::uuid[], '{}'::uuid[]")
        row = await self.conn.fetchrow(
            f"""with superseded as (
                    update commands set status = 'cancelled', completed_at = now(),
                                        error = 'superseded by a newer write'
                    where $2 = 'write' and tenant_id = $1 and device_id = any($10::uuid[]) and path = $3
                      and operation = 'write' and status = 'queued'
                      and exists (select 1 from commands where status = 'queued' and tenant_id = $1
                                  and path = $3 and operation = 'write')
                    returning 1),
                batch as (
                    insert into command_batches (tenant_id, operation, path, value, target, device_count,
                                                 created_by, origin, expires_at)
                    values ($1, $2, $3, $4, $5, $6, $7, $8, $9) returning id),
                added as (
                    insert into commands (batch_id, tenant_id, device_id, operation, path, value, expires_at)
                    select batch.id, $1, d, $2, $3, $4, $9 from batch, unnest($10::uuid[]) as d
                    returning device_id, id)
                select (select id from batch), {ids}, count(*), (select count(*) from superseded),
                       pg_notify('{NOTIFY_CHANNEL}', '')
                from added""",
            tenant_id, operation.value, path, value, target, len(device_ids), created_by, origin, expires_at,
            list(device_ids))
        if row[4]:
            command_targets_finished([[Operation.WRITE.value, CommandStatus.CANCELLED.value, row[4]]])
        return row[0], dict(zip(row[1], row[2], strict=True))

    async def batch(self, tenant_id: UUID, batch_id: UUID, *, limit: int) -> Batch | None:
        row = await self.conn.fetchrow(
            "select * from command_batches where tenant_id = $1 and id = $2", tenant_id, batch_id)
        if row is None:
            return None
        counts = {r["status"]: r["n"] for r in await self.conn.fetch(
            "select status, count(*) as n from commands where batch_id = $1 group by status", batch_id)}
        commands = await self.conn.fetch(
            f"""select {_COMMAND_COLUMNS_OF_C}, {WAITING_REASON}
                from commands c left join registrations r on r.device_id = c.device_id
                where c.batch_id = $1 order by c.created_at, c.id limit $2""",
            batch_id, limit)
        return batch_from_row(row, counts, [command_from_row(c) for c in commands])

    async def batches(self, tenant_id: UUID, query: CommandQuery, *, after: tuple[datetime, UUID] | None,
                      limit: int) -> tuple[list[Batch], bool]:
        """The city's commands (batches), newest first, each with its per-state counts, and
        whether more follow; `after` is the (created_at, id) of the last of the page before.
        Walks `command_batches_tenant` from the newest or the cursor, ties on created_at sorted
        incrementally (EXPLAIN ANALYZE at 40,000 batches: 0.3 ms a page, no index to add). A
        condition is in the statement only when asked for, so the planner sees where to start
        rather than `$n is null or ...`."""
        await _plan_for_today(self.conn)
        params: list[Any] = [tenant_id]

        def param(value: Any) -> str:
            params.append(value)
            return f"${len(params)}"

        where = ["b.tenant_id = $1"]
        if query.operations:
            where.append(f"b.operation = any({param(query.operations)}::text[])")
        if query.origins:
            where.append(f"b.origin = any({param(query.origins)}::text[])")
        if query.since is not None:
            where.append(f"b.created_at >= {param(query.since)}")
        if query.until is not None:
            where.append(f"b.created_at < {param(query.until)}")
        if query.device_id is not None:
            where.append("exists (select 1 from commands c where c.tenant_id = b.tenant_id "
                         f"and c.device_id = {param(query.device_id)} and c.batch_id = b.id)")
        if query.statuses:
            where.append("exists (select 1 from commands c where c.batch_id = b.id "
                         f"and c.status = any({param(query.statuses)}::text[]))")
        if after is not None:
            where.append(f"(b.created_at, b.id) < ({param(after[0])}::timestamptz, {param(after[1])}::uuid)")
        # The page first, then its counts: counted before the limit, they may be counted for
        # every batch the filter lets through (EXPLAIN ANALYZE: 110 ms at 40,000 batches).
        rows = await self.conn.fetch(
            f"""with page as (
                    select b.* from command_batches b where {' and '.join(where)}
                    order by b.created_at desc, b.id desc limit {param(limit + 1)})
                select page.*, k.counts from page
                left join lateral (
                    select jsonb_object_agg(status, n) as counts from (
                        select status, count(*)::int as n from commands c where c.batch_id = page.id
                        group by status) s) k on true
                order by page.created_at desc, page.id desc""", *params)
        return [batch_from_row(r, r["counts"] or {}, []) for r in rows[:limit]], len(rows) > limit

    async def skip(self, batch_id: UUID, lacking: dict[UUID, str]) -> None:
        """Mark the commands of devices that lack the path (device -> what it lacks) skipped,
        before they are ever claimed: in the transaction that queued them."""
        if lacking:
            command_targets_finished(await self.conn.fetchval(
                f"""with done as (
                        update commands c set status = 'skipped', completed_at = now(),
                            error = '{PATH_NOT_HOSTED}: registered without ' || l.missing,
                            result = jsonb_build_object('reason', '{PATH_NOT_HOSTED}', 'lacks', l.missing)
                        from unnest($2::uuid[], $3::text[]) as l(device_id, missing)
                        where c.batch_id = $1 and c.device_id = l.device_id and c.status = 'queued'
                        returning c.operation, c.status)
                    select {_TALLY_FINISHED}""",
                batch_id, list(lacking), list(lacking.values())))

    async def registered_links(self, tenant_id: UUID, device_ids: Sequence[UUID]) -> dict[UUID, str]:
        """The object links of those of these devices registered now."""
        rows = await self.conn.fetch(
            "select device_id, object_links from registrations where tenant_id = $1 and device_id = any($2::uuid[])",
            tenant_id, list(device_ids))
        return {r["device_id"]: r["object_links"] for r in rows}

    async def cancel_batch(self, tenant_id: UUID, batch_id: UUID) -> int:
        row = await self.conn.fetchrow(
            f"""with done as (
                    update commands c set status = 'cancelled', completed_at = now(), error = 'cancelled'
                    where tenant_id = $1 and batch_id = $2 and status = 'queued'
                    returning {_FINISHED_COLUMNS}),
                {_PUBLISH_FINISHED.format(threshold="$3")}""",
            tenant_id, batch_id, EVENT_PER_COMMAND_UP_TO)
        await self._finished(row)
        return row["changed"]

    async def end_for_device(self, tenant_id: UUID, device_id: UUID, reason: str) -> int:
        """A device leaves service: what is queued or awaiting its answer is cancelled (a late
        answer then changes nothing: outcomes only land on `sent`), and its observations end.
        Returns how many commands were cancelled."""
        row = await self.conn.fetchrow(
            f"""with ended as (delete from observations where tenant_id = $1 and device_id = $2),
                    done as (
                        update commands c set status = 'cancelled', completed_at = now(), error = $3
                        where tenant_id = $1 and device_id = $2 and status in ('queued', 'sent')
                        returning {_FINISHED_COLUMNS}),
                    {_PUBLISH_FINISHED.format(threshold="$4")}""",
            tenant_id, device_id, reason, EVENT_PER_COMMAND_UP_TO)
        await self._finished(row)
        return row["changed"]

    async def for_device(self, tenant_id: UUID, device_id: UUID, *, statuses: Sequence[str] | None,
                         after: tuple[datetime, UUID] | None, limit: int
                         ) -> tuple[list[RequestedCommand], bool]:
        """The device's commands, newest first, and whether more follow; `after` is the
        (created_at, id) of the last one of the page before. Walks `commands_device_history`
        backwards from the device's newest, stopping at the limit (the commands of one batch
        share their created_at: the id breaks the tie)."""
        # The cursor's condition only when there is a cursor: `$5 is null or ...` would leave
        # the planner a filter instead of where to start in the index.
        after_cursor = "and (c.created_at, c.id) < ($5::timestamptz, $6::uuid)" if after else ""
        rows = await self.conn.fetch(
            f"""select {_COMMAND_COLUMNS_OF_C}, {WAITING_REASON},
                       b.origin, b.created_by
                from commands c join command_batches b on b.id = c.batch_id
                left join registrations r on r.device_id = c.device_id
                where c.tenant_id = $1 and c.device_id = $2
                  and ($3::text[] is null or c.status = any($3::text[])) {after_cursor}
                order by c.created_at desc, c.id desc limit $4""",
            tenant_id, device_id, statuses, limit + 1, *(after or ()))
        return [RequestedCommand(command_from_row(r), r["origin"], r["created_by"]) for r in rows[:limit]], \
            len(rows) > limit

    async def claim_due(self, node: str, limit: int, *, device_id: UUID | None = None,
                        node_timeout: timedelta = NODE_TIMEOUT, slot: Slot = ONLY_SLOT,
                        prepared: bool = False) -> list[tuple[DeviceCommand, str, int, bool]]:
        """Claim due commands this node should deliver, at most one in flight per device; each
        with its device's address, port and transport (secure: registered over coaps).

        A node delivers to devices registered through it (their answers come back to its
        socket), and adopts devices of nodes whose heartbeat stopped (those of its `slot`, in a
        node of several device edge processes). Queue-mode devices are
        only claimed for by `device_id`, right after they register or update (they are awake).

        One statement: in a transaction, or on its own on a connection `prepare_claimer` set up
        (`prepared`), where it is a transaction by itself.
        """
        if not prepared:
            await self.conn.execute("; ".join(
                f"set local {setting}" for setting in claim_settings(one_device=device_id is not None)))
        rows = await self.conn.fetch(
            f"""with due as (
                    select c.id from commands c
                    join registrations r on r.device_id = c.device_id
                    where c.status = 'queued' and c.next_attempt_at <= now() and c.expires_at > now()
                      and ($3::uuid is null and not r.queue_mode or c.device_id = $3)
                      and (r.node = $1 or r.port % $6 = $5 and not exists (
                              select 1 from fleet_nodes n
                              where n.name = r.node and n.heartbeat_at > now() - $4::interval))
                      and not exists (
                          select 1 from commands e
                          where e.device_id = c.device_id and e.id <> c.id
                            and (e.status = 'sent' or (e.status = 'queued' and
                                 (e.created_at, e.id) < (c.created_at, c.id))))
                    order by c.next_attempt_at
                    limit $2
                    for update of c skip locked)
                update commands c set status = 'sent', attempts = c.attempts + 1, sent_at = now()
                from registrations r
                where c.id = any(array(select id from due)) and r.device_id = c.device_id
                returning {_COMMAND_COLUMNS_OF_C},
                          r.address, r.port, r.secure""",
            node, limit, device_id, node_timeout, *slot)
        return [(command_from_row(r), r["address"], r["port"], r["secure"]) for r in rows]

    async def complete(self, outcomes: Sequence[Outcome], *, max_attempts: int,
                       backoff_base_s: float) -> None:
        """Record outcomes in one statement: success, final failure, or back into the queue;
        what finished is published in the same transaction (see EVENT_PER_COMMAND_UP_TO)."""
        await _plan_for_today(self.conn)
        row = await self.conn.fetchrow(
            f"""with done as (
                   update commands c set
                       status = case when o.succeeded then 'succeeded'
                                     when not o.retryable or c.attempts >= $6 or {ONCE_ONLY} then 'failed'
                                     when c.expires_at <= now() then 'expired'
                                     else 'queued' end,
                       result = o.result,
                       error = o.error,
                       next_attempt_at = now() + make_interval(secs => $7 * power(2, c.attempts - 1)),
                       completed_at = case when o.succeeded or not o.retryable or c.attempts >= $6
                                           or c.expires_at <= now() or {ONCE_ONLY} then now() end
                   from unnest($1::uuid[], $2::bool[], $3::jsonb[], $4::text[], $5::bool[])
                        as o(id, succeeded, result, error, retryable)
                   where c.id = o.id and c.status = 'sent'
                   returning {_FINISHED_COLUMNS}),
               {_PUBLISH_FINISHED.format(threshold="$8")}""",
            [o.command_id for o in outcomes], [o.succeeded for o in outcomes],
            [o.result for o in outcomes], [o.error for o in outcomes],
            [o.retryable for o in outcomes], max_attempts, backoff_base_s, EVENT_PER_COMMAND_UP_TO)
        await self._finished(row)

    async def expire(self) -> int:
        row = await self.conn.fetchrow(
            f"""with done as (
                    update commands c set status = 'expired', completed_at = now(),
                                          error = coalesce(error, 'expired before delivery')
                    where status = 'queued' and expires_at <= now()
                    returning {_FINISHED_COLUMNS}),
                {_PUBLISH_FINISHED.format(threshold="$1")}""",
            EVENT_PER_COMMAND_UP_TO)
        await self._finished(row)
        return row["changed"]

    async def _finished(self, row: asyncpg.Record) -> None:
        """After a statement ending with _PUBLISH_FINISHED: its large batches' events, its counts."""
        await self._publish_finished_batches(row["large_batches"])
        command_targets_finished(row["finished"])

    async def _publish_finished_batches(self, batch_ids: list[UUID]) -> None:
        """One `command.finished` (subject `batch`) for each of these batches with nothing left
        queued or sent. The batch rows are locked first, in a statement of their own: the
        check after it then sees what any other node committed for the same batch meanwhile,
        so of two transactions finishing a batch's last commands exactly one publishes."""
        if not batch_ids:
            return
        await self.conn.execute(
            "select 1 from command_batches where id = any($1::uuid[]) order by id for update", batch_ids)
        await self.conn.execute(
            f"""with finished as (
                    select b.id, b.tenant_id, b.operation, b.path, b.device_count from command_batches b
                    where b.id = any($1::uuid[]) and not exists (
                        select 1 from commands c where c.batch_id = b.id and c.status in ('queued', 'sent')))
                {INSERT_EVENTS}
                select tenant_id, '{COMMAND_FINISHED}', 'batch', id::text, jsonb_build_object(
                    'batch_id', id, 'operation', operation, 'path', path, 'device_count', device_count,
                    'counts', (select jsonb_object_agg(status, n) from (
                        select status, count(*) as n from commands where batch_id = f.id group by status) s))
                from finished f""",
            batch_ids)

    async def recover_stale(self, older_than: timedelta) -> int:
        """Commands a node claimed and then died with: back to the queue, but a firmware Update
        (see ONCE_ONLY), which fails instead."""
        return await self._unsend("c.sent_at < now() - $1::interval", older_than)

    async def release(self, command_ids: Sequence[UUID]) -> int:
        """Commands a stopping node had sent without an answer: what `recover_stale` would do
        to them five minutes later, now, so another node sends them again at once."""
        return await self._unsend("c.id = any($1::uuid[])", list(command_ids))

    async def release_through(self, node: str, node_timeout: timedelta) -> int:
        """Commands sent to devices registered through `node` and never answered: those of a
        process that died under that name (a node's worker restarted in its slot takes the name
        again), back to the queue now, as `recover_stale` would do five minutes later.

        Only what that process sent: once its heartbeat was `node_timeout` old, other nodes
        claimed its devices' commands (claim_due), and what they sent is under way there. So
        this runs before the new process's first heartbeat, which would hide the last one's;
        a node that left ('-infinity') released its own, and one without a row sent nothing
        another node could not have sent too: nothing is released then (recover_stale's turn)."""
        return await self._unsend(
            """c.device_id in (select r.device_id from registrations r where r.node = $1)
               and c.sent_at < (select n.heartbeat_at from fleet_nodes n where n.name = $1) + $2::interval""",
            node, node_timeout)

    async def _unsend(self, which: str, *arguments: object) -> int:
        """`which` of the commands sent back to the queue; its parameters are $1.. (`arguments`)."""
        unknown = f"${len(arguments) + 1}"
        row = await self.conn.fetchrow(
            f"""with done as (
                    update commands c set
                        status = case when {ONCE_ONLY} then 'failed' else 'queued' end,
                        error = case when {ONCE_ONLY} then {unknown} else c.error end,
                        completed_at = case when {ONCE_ONLY} then now() end,
                        next_attempt_at = now()
                    where c.status = 'sent' and {which}
                    returning c.operation, c.status)
                select count(*) as changed, {_TALLY_FINISHED} as finished from done""", *arguments, OUTCOME_UNKNOWN)
        command_targets_finished(row["finished"])
        return row["changed"]

    async def heartbeat(self, node: str) -> None:
        await self.conn.execute(
            """insert into fleet_nodes (name) values ($1)
               on conflict (name) do update set heartbeat_at = now()""", node)

    async def leave(self, node: str) -> None:
        """A node stopping cleanly: its heartbeat is dated back to the beginning of time, so the
        other nodes take its devices over at their next housekeeping instead of after the timeout
        (the row stays as the sign that its devices are to be adopted; `adopt` removes it)."""
        await self.conn.execute("update fleet_nodes set heartbeat_at = '-infinity' where name = $1", node)

    async def adopt(self, node: str, node_timeout: timedelta, slot: Slot = ONLY_SLOT) -> list[asyncpg.Record]:
        """Take over the registrations of nodes whose heartbeat stopped (or that left): they
        become `node`'s, with their observations (but a queue-mode device's, observed again when
        it wakes: `observed_paths`), and what those nodes had sent them without an answer goes
        back to the queue at once (a firmware Update fails instead: ONCE_ONLY). Several nodes
        may adopt at once: each registration goes to one (SKIP LOCKED); in a node of several
        device edge processes, to the one of its slot (see Slot). Returns the observations
        to establish again: tenant_id, device_id, path, address, port, secure."""
        dead = await self.conn.fetch(
            "select name from fleet_nodes where name <> $1 and heartbeat_at < now() - $2::interval",
            node, node_timeout)
        if not dead:
            return []
        dead_names = [r["name"] for r in dead]
        adopted = await self.conn.fetch(
            """with taken as (select r.id, n.heartbeat_at from registrations r
                              join fleet_nodes n on n.name = r.node
                              where r.node = any($2::text[]) and r.port % $5 = $4
                              for update of r skip locked)
               update registrations r set node = $1 from taken where r.id = taken.id
               returning r.device_id, r.queue_mode, taken.heartbeat_at + $3::interval as others_from""",
            node, dead_names, node_timeout, *slot)
        # Only what the stopped node sent: the others claim its devices' commands from its last
        # heartbeat + the timeout on (claim_due), and what one of them sent is under way. A node
        # that left ('-infinity') released what it had sent itself.
        await self._unsend("exists (select 1 from unnest($1::uuid[], $2::timestamptz[]) as a(device_id, others_from) "
                           "where a.device_id = c.device_id and c.sent_at < a.others_from)",
                           [r["device_id"] for r in adopted], [r["others_from"] for r in adopted])
        observations = await self.conn.fetch(
            """update observations o set node = $1
               from registrations r
               where r.device_id = o.device_id and o.device_id = any($2::uuid[]) and not r.queue_mode
               returning o.tenant_id, o.device_id, o.path, r.address, r.port, r.secure""",
            node, [r["device_id"] for r in adopted if not r["queue_mode"]])
        # Forgotten once nothing of theirs is left (a registration locked elsewhere waits).
        await self.conn.execute(
            """delete from fleet_nodes n where n.name = any($1::text[])
                 and not exists (select 1 from registrations r where r.node = n.name)""", dead_names)
        return observations

    async def observed_paths(self, device_id: UUID, *, elsewhere_than: str | None = None) -> list[str]:
        """The paths observed of a device; with `elsewhere_than`, only those another node made
        (the device moved here: their notifications go to an address it no longer uses)."""
        rows = await self.conn.fetch(
            """select path from observations
               where device_id = $1 and ($2::text is null or node is distinct from $2)""",
            device_id, elsewhere_than)
        return [r["path"] for r in rows]
