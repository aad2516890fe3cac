-- The content format each device answers reads and observations in, learned by negotiation
-- (null: not learned yet), so every node and every restart asks in it first; and Write-Attributes
-- and Discover as command operations.
alter table devices add column read_content_format integer
    check (read_content_format between 0 and 65535);

alter table command_batches drop constraint command_batches_operation_check;
alter table command_batches add constraint command_batches_operation_check
    check (operation in ('read', 'write', 'execute', 'observe', 'cancel_observe',
                         'write_attributes', 'discover'));
