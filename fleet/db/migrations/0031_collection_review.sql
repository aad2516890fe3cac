-- The forecast job turns the bins' acknowledged "emptied" Executes into emptyings every pass
-- (fleet.collection.forecast_repository.record_executes): those few, by city and time, not
-- every command the city ever sent.
-- No table is created here: the index is on `commands`, walled since 0008/0009. Its wall is
-- stated again beside the index, so the migration reads as what it is (both are no-ops).
alter table commands enable row level security;
alter table commands force row level security;
create index commands_emptied on commands (tenant_id, completed_at)
    where path = '/3435/0/9' and operation = 'execute' and status = 'succeeded';
