-- Who started a campaign: a required approval must come from a third key, neither the one that
-- created the campaign nor the one that started it.
alter table firmware_campaigns add column started_by uuid;
