"""fleet_command_targets_finished_total: every statement that finishes device commands counts them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY

from fleet.commands.models import Operation, Outcome
from fleet.commands.repository import CommandRepository
from fleet.registry.models import DeviceKind, NewDevice
from fleet.registry.service import DeviceService
from tests.conftest import make_city

STATES = ("succeeded", "failed", "expired", "cancelled", "skipped")


def finished() -> dict[tuple[str, str], float]:
    return {(operation, state): REGISTRY.get_sample_value(
                "fleet_command_targets_finished_total", {"operation": operation, "state": state}) or 0.0
            for operation in ("read", "write") for state in STATES}


async def test_each_way_a_command_finishes_is_counted(db):
    city = await make_city(db, "seoul")
    devices = [(await DeviceService(db).create_validated(city.principal, NewDevice(
        kind=DeviceKind.STREETLIGHT, endpoint=f"light-{n}", lat=37.5, lon=127.0))).id for n in range(3)]
    soon, past = datetime.now(UTC) + timedelta(hours=1), datetime.now(UTC) - timedelta(seconds=1)
    tenant = city.principal.tenant_id
    before = finished()
    async with db.system_tx() as conn:
        repo = CommandRepository(conn)
        await repo.insert_batch(tenant, Operation.WRITE, "/3/0/1", 1, {}, devices, None, "test", soon)
        # A newer write of the same resource cancels the three waiting; one of its devices lacks the path.
        batch = await repo.insert_batch(tenant, Operation.WRITE, "/3/0/1", 2, {}, devices, None, "test", soon)
        await repo.skip(batch, {devices[0]: "</3/0/1>"})
        assert await repo.cancel_batch(tenant, batch) == 2
        await repo.insert_batch(tenant, Operation.READ, "/3/0/0", None, {}, devices[:1], None, "test", past)
        assert await repo.expire() == 1
        reads = await repo.insert_batch(tenant, Operation.READ, "/3/0/2", None, {}, devices[:2], None, "test", soon)
        sent = await conn.fetch("update commands set status = 'sent', attempts = 1 where batch_id = $1 returning id",
                                reads)
        await repo.complete([Outcome(sent[0]["id"], succeeded=True, result={"v": 1}),
                             Outcome(sent[1]["id"], succeeded=False, error="4.04", retryable=False)],
                            max_attempts=5, backoff_base_s=1)
    after = finished()
    moved = {key: after[key] - before[key] for key in after if after[key] != before[key]}
    assert moved == {("write", "cancelled"): 5, ("write", "skipped"): 1, ("read", "expired"): 1,
                     ("read", "succeeded"): 1, ("read", "failed"): 1}
