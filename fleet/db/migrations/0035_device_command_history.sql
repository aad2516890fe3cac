-- A device's commands, newest first (GET /api/v1/devices/{id}/commands, the device's page):
-- read from the device's newest backwards and stopped at the page's end, where
-- `commands_device (device_id, status)` had every command the device was ever sent fetched
-- and sorted. `id` breaks the tie between commands made in one transaction (one created_at).
-- No table is created here: the index is on `commands`, walled since 0008/0009. Its wall is
-- stated again beside the index, so the migration reads as what it is (both are no-ops).
alter table commands enable row level security;
alter table commands force row level security;
create index commands_device_history on commands (tenant_id, device_id, created_at, id);
