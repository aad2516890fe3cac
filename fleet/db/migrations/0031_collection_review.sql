-- The forecast job turns the bins' acknowledged "emptied" Executes into emptyings every pass
-- (fleet.collection.forecast_repository.record_executes): those few, by city and time, not
-- every command the city ever sent.
create index commands_emptied on commands (tenant_id, completed_at)
    where path = '/3435/0/9' and operation = 'execute' and status = 'succeeded';
