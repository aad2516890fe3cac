"""Counters of a simulation run, the periodic one-line status and the final summary."""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass, field


@dataclass
class Stats:
    devices: int = 0
    registered: int = 0  # devices that completed a Register at least once
    online: int = 0  # devices holding a registration right now
    refused: int = 0  # Register answered 4.03: the endpoint is not provisioned
    registrations: int = 0
    registration_failures: int = 0
    registrations_busy: int = 0  # of the failures: answered 5.03 with Max-Age
    registrations_lost: int = 0  # of the failures: timed out (no ACK, or no response after the empty ACK)
    updates: int = 0
    update_failures: int = 0
    sends: int = 0
    sends_acked: int = 0
    sends_failed: int = 0
    # Of the failed: answered 5.03 with Max-Age (the server said "later": an overload answered,
    # not dropped), and timed out (no ACK after every retransmission, or no response after the empty ACK).
    sends_busy: int = 0
    sends_lost: int = 0
    retransmissions: int = 0
    timeouts: int = 0
    separate_responses: int = 0
    server_requests: int = 0
    server_errors_answered: int = 0  # our 4.xx answers to server requests
    notifications: int = 0
    malformed_sent: int = 0
    malformed_rejected: int = 0  # answered 4.00, as they should be
    deregistered: int = 0
    silenced: int = 0
    fw_blocks: int = 0  # firmware blocks received (pulled or pushed)
    fw_downloaded: int = 0  # packages received whole and checked (State 2)
    fw_updated: int = 0  # devices rebooted onto a new version
    fw_failed: int = 0  # transfers and installs that ended with a failure code
    bootstrap_requests: int = 0
    bootstraps: int = 0  # Bootstrap-Finish taken: the device got an account
    bootstrap_failures: int = 0
    handshake_failures: int = 0  # DTLS handshakes that failed (a wrong, unknown or revoked key)
    link_failures: int = 0  # links that could not even be opened
    errors: int = 0  # simulator bugs caught (each logged, the first ten with a traceback)
    faults: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    _cpu_started: float = field(default_factory=lambda: _cpu_seconds())

    def restart(self) -> None:
        """Count time and CPU from now: the devices start; loading them is not the run."""
        self.started = time.monotonic()
        self._cpu_started = _cpu_seconds()

    def fault(self, kind: str) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + 1

    def status_line(self, sim_label: str) -> str:
        elapsed = time.monotonic() - self.started
        return (f"[{elapsed:6.0f}s] {sim_label} | registered {self.registered:,}/{self.devices:,}"
                f" online {self.online:,} | sends {self.sends:,} acked {self.sends_acked:,}"
                f" failed {self.sends_failed:,} | retransmissions {self.retransmissions:,}"
                f" | server requests {self.server_requests:,}"
                + (f" | malformed {self.malformed_sent:,} (4.00: {self.malformed_rejected:,})"
                   if self.malformed_sent else "")
                + (f" | refused {self.refused:,}" if self.refused else "")
                + (f" | bootstrapped {self.bootstraps:,}/{self.bootstrap_requests:,}"
                   if self.bootstrap_requests else "")
                + (f" | DTLS failures {self.handshake_failures:,}" if self.handshake_failures else "")
                + (f" | firmware {self.fw_downloaded:,} downloaded {self.fw_updated:,} installed"
                   f" {self.fw_failed:,} failed" if self.fw_blocks else ""))

    def summary(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        cpu = _cpu_seconds() - self._cpu_started
        lines = [
            f"simulated {self.devices:,} devices for {elapsed:.1f}s",
            f"  registrations  {self.registrations:,} ok, {self.registration_failures:,} failed,"
            f" {self.refused:,} refused (not provisioned); {self.registered:,} devices registered",
            f"  updates        {self.updates:,} ok, {self.update_failures:,} failed",
            f"  sends          {self.sends:,} sent, {self.sends_acked:,} acked,"
            f" {self.sends_failed:,} failed ({self.sends_acked / elapsed:,.1f}/s acked)",
            f"  transport      {self.retransmissions:,} retransmissions, {self.timeouts:,} timeouts,"
            f" {self.separate_responses:,} separate responses",
            f"  server asked   {self.server_requests:,} requests ({self.server_errors_answered:,}"
            f" refused), {self.notifications:,} notifications sent",
            f"  deregistered   {self.deregistered:,}",
            f"  process        {cpu:.1f}s CPU ({100 * cpu / elapsed:.0f}% of one core),"
            f" max RSS {_max_rss_mib():.0f} MiB",
        ]
        if self.errors:
            lines.append(f"  SIMULATOR ERRORS {self.errors:,} (see the log)")
        if self.malformed_sent:
            lines.append(f"  malformed      {self.malformed_sent:,} sent,"
                         f" {self.malformed_rejected:,} answered 4.00")
        if self.fw_blocks or self.fw_failed:
            lines.append(f"  firmware       {self.fw_blocks:,} blocks, {self.fw_downloaded:,} packages"
                         f" downloaded, {self.fw_updated:,} installed, {self.fw_failed:,} failed")
        if self.bootstrap_requests or self.handshake_failures or self.link_failures:
            lines.append(f"  security       {self.bootstrap_requests:,} bootstrap requests, {self.bootstraps:,}"
                         f" finished, {self.bootstrap_failures:,} failed; {self.handshake_failures:,} DTLS"
                         f" handshakes failed, {self.link_failures:,} links not opened")
        if self.faults:
            lines.append("  faults         " + ", ".join(f"{k} {v:,}" for k, v in sorted(self.faults.items())))
        return "\n".join(lines)


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
