"""A Fleet process killed with -9 does not keep the embedded server running after every later one has exited."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fleet.db.embedded import HANDLES, forget_dead_handles


def test_a_killed_process_is_dropped_from_the_servers_users(tmp_path: Path):
    killed = subprocess.Popen([sys.executable, "-c", "pass"])
    killed.wait()  # gone, as a supervisor after `kill -9`, without taking itself off the list
    (tmp_path / HANDLES).write_text(json.dumps([killed.pid, 1]))
    forget_dead_handles(tmp_path)
    assert json.loads((tmp_path / HANDLES).read_text()) == [1]  # init: alive (not ours to signal)
    forget_dead_handles(tmp_path / "none")  # no server made yet: nothing to do
