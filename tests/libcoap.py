"""libcoap's example client (Debian's libcoap3-bin: one binary per TLS library), for interop tests."""

from __future__ import annotations

import os
import shutil
import subprocess

from tests.ci import unavailable


def libcoap_binary(name: str) -> str:
    """The path of `name` (coap-client-notls, -openssl, -gnutls), installed when missing (the
    tests run as root in CI); skipped without it, failed under CI."""
    found = shutil.which(name)
    if found is None and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "libcoap3-bin"]
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            subprocess.run(install, env=env, capture_output=True)
        found = shutil.which(name)
    if found is None:
        unavailable(f"{name} is not installed and could not be installed (needs root and apt)")
    return found
