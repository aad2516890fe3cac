-- The live event stream: one wake-up per city and statement, and what retention has pruned.

-- 0012 notified once per row: a batch of 10,000 command outcomes queued 10,000 notifications
-- (PostgreSQL folds identical ones, after a lookup each). One per city and statement now, and
-- it carries the transaction id, so a listener knows which event it waits for while older
-- transactions still hold it back (see EventRepository.after).
drop trigger events_notify on events;
create or replace function fleet_event_notify() returns trigger
    language plpgsql as $$
begin
    perform pg_notify('fleet_events', t.tenant_id::text || ' ' || pg_current_xact_id()::text)
    from (select distinct tenant_id from inserted) t;
    return null;
end $$;
create trigger events_notify after insert on events
    referencing new table as inserted
    for each statement execute function fleet_event_notify();

-- Per city, the last position (in log order) retention has deleted: a reader resuming from
-- before it may have missed events and is told so (an SSE `reset`).
create table events_pruned (
    tenant_id  uuid primary key references tenants (id),
    xid        xid8 not null,
    id         bigint not null
);

-- The wall: row-level security enabled and forced (the owner too), then fleet_wall's policies
-- (tenant_wall for fleet_app, system_access for fleet_system).
alter table events_pruned enable row level security;
alter table events_pruned force row level security;
select fleet_wall('events_pruned');
