-- Where crews are, so a work order can go to the crew nearest to it: a home base the city sets
-- (both coordinates or neither) and the last position a crew's tablet reported, with its time
-- (all or nothing). The city's rules say how long a reported position counts as current.
alter table crews
    add column home_lat double precision check (home_lat between -90 and 90),
    add column home_lon double precision check (home_lon between -180 and 180),
    add column position_lat double precision check (position_lat between -90 and 90),
    add column position_lon double precision check (position_lon between -180 and 180),
    add column position_accuracy_m double precision check (position_accuracy_m between 0 and 100000),
    add column position_at timestamptz,
    add constraint crews_home_whole check ((home_lat is null) = (home_lon is null)),
    add constraint crews_position_whole check (
        (position_lat is null) = (position_lon is null) and (position_lat is null) = (position_at is null)
        and (position_accuracy_m is null or position_at is not null));

alter table work_order_rules
    add column crew_position_fresh_minutes integer not null default 120
        check (crew_position_fresh_minutes between 1 and 10080);
