-- Alarms' lifecycle: the sweep that clears alarms absent long enough, and devices offline beyond
-- their registration's lifetime (the expiry deletes the registration, so the device keeps when).

-- Only open alarms whose condition is absent: the sweep reads these, oldest absence first.
create index alarms_clearing on alarms (clearing_since) where status <> 'cleared' and clearing_since is not null;

-- When the registration's lifetime ran out; null while registered (or never registered).
alter table devices add column offline_since timestamptz;
create index devices_offline_since on devices (offline_since) where offline_since is not null;
