-- The control room counts one resource across a city (lights' levels, bins' fill): read from
-- this index, only those rows, not every resource of every device of the city.
-- No table is created here: the index is on `device_state`, walled since 0009. Its wall is
-- stated again beside the index, so the migration reads as what it is (both are no-ops).
alter table device_state enable row level security;
alter table device_state force row level security;
create index device_state_tenant_path on device_state (tenant_id, path);
