-- Browser sessions: an API key exchanged for a cookie (POST /session). The cookie carries a
-- random secret; only its hash is kept, like a key's. A session ends at logout, when its key is
-- revoked, or after `idle` without use.

create table web_sessions (
    id            uuid primary key default gen_random_uuid(),
    tenant_id     uuid not null references tenants (id),
    api_key_id    uuid not null,
    secret_hash   bytea not null unique,
    created_at    timestamptz not null default now(),
    last_used_at  timestamptz not null default now(),
    expires_at    timestamptz not null,
    ended_at      timestamptz,
    -- Who signed in from where, for the audit of a shared control-room screen.
    user_agent    text check (length(user_agent) <= 500),
    constraint web_sessions_key_same_city
        foreign key (tenant_id, api_key_id) references api_keys (tenant_id, id)
);
create unique index web_sessions_tenant_id on web_sessions (tenant_id, id);
create index web_sessions_key on web_sessions (tenant_id, api_key_id) where ended_at is null;
-- The leader's sweep of sessions long over.
create index web_sessions_expires on web_sessions (expires_at);

alter table web_sessions enable row level security;
alter table web_sessions force row level security;
select fleet_wall('web_sessions');
