"""The wall, checked in the migrations' text: a table that holds city rows is enabled and forced
behind row-level security in the very migration that creates it (since 0009 made that the rule;
the tables before it were walled by 0009 itself)."""

from __future__ import annotations

import re
from pathlib import Path

import fleet.db

MIGRATIONS = Path(fleet.db.__file__).parent / "migrations"
WALLS_SINCE = 9
CREATE = re.compile(r"create table (\w+) \((.*?)\n\);", re.S | re.I)


def test_every_new_city_table_is_walled_where_it_is_created():
    checked = 0
    for path in sorted(MIGRATIONS.glob("*.sql")):
        if int(path.name.split("_")[0]) < WALLS_SINCE:
            continue
        sql = path.read_text()
        for table, body in CREATE.findall(sql):
            if not re.search(r"^\s*tenant_id\b", body, re.M):
                continue
            checked += 1
            for clause in ("enable row level security", "force row level security"):
                assert f"alter table {table} {clause};" in sql, f"{path.name}: {table} lacks `{clause}`"
            assert f"select fleet_wall('{table}');" in sql, f"{path.name}: {table} has no tenant policy"
    assert checked >= 13
