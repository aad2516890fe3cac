-- The leader looks at the routes under way every half minute (a bin's fill drop completes its
-- stop; fleet.collection.automation): those few, not every route ever planned.
create index collection_routes_under_way on collection_routes (starts_at)
    where status in ('assigned', 'in_progress');
