-- A command to a filter or group skips the devices whose registration shows they lack its
-- path's object or instance: status 'skipped' (the reason in `error`), instead of being sent
-- and counted failed on their 4.04. No table is created: `commands` is walled since 0008/0009,
-- and its wall is stated again beside the change (both are no-ops).
alter table commands enable row level security;
alter table commands force row level security;
alter table commands drop constraint commands_status_check;
-- NOT VALID: every existing row passed the old check, which admitted less, so scanning the
-- table to prove it again (under this migration's ACCESS EXCLUSIVE lock, the dispatcher
-- waiting) would prove nothing; new and updated rows are checked all the same.
alter table commands add constraint commands_status_check
    check (status in ('queued', 'sent', 'succeeded', 'failed', 'expired', 'cancelled', 'skipped')) not valid;
