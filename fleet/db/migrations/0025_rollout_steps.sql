-- The rollout engine's bookkeeping on each device's part in a campaign: which sub-step of its
-- state it is at (the command under way is one of several per state), since when, and the
-- firmware_update_failed finding still to hand to the alarms (an outbox: the alarm service
-- commits in a transaction of its own, so a node stopping in between loses nothing).
alter table firmware_campaign_devices
    add column step text check (step in ('observe', 'read', 'deliver', 'execute')),
    add column step_at timestamptz,
    add column alarm_todo text check (alarm_todo in ('raise', 'clear'));
create index firmware_campaign_devices_alarm_todo on firmware_campaign_devices (tenant_id)
    where alarm_todo is not null;
