-- Overrides now light every light of their scope, also those no calendar governs. Such a light
-- returns to the level it had before the override when the last one ends: its target row says so.
alter table lighting_targets
    add column unscheduled boolean not null default false,
    add column resume_level integer check (resume_level between 0 and 100);
