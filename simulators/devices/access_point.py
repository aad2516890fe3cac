"""A public Wi-Fi access point: WLAN connectivity (12), one instance per radio, on Ethernet.

Connected clients follow the city's daily rhythm (commute, lunch and evening peaks) scaled by
the district's street activity. Object 12 has no resource for a client count, so the crowd
shows in what the AP can report: its byte and packet counters and its backhaul link
utilisation (/4/0/6).

Faults: radios down (/12/x/3 Status 2, Error; counters stop), a crowd far beyond what the AP
serves (counters and backhaul utilisation at their peak all day), and throughput collapsing
(clients stay, but the counters barely move).
"""

from __future__ import annotations

from fleet.objectmodel import ResourcePath
from simulators.clock import DailyCurve
from simulators.devices.base import ETHERNET, PERIPHERAL_MALFUNCTION, POWER_OVER_ETHERNET, SimulatedDevice
from simulators.inventory import DeviceSpec
from simulators.objects import InstanceTable, Resource, constant

# Clients relative to the day's mean, local hours 0..23.
CLIENTS = DailyCurve([0.5, 0.3, 0.2, 0.15, 0.15, 0.25, 0.6, 1.3, 1.8, 1.3, 1.0, 1.2,
                      1.7, 1.5, 1.1, 1.1, 1.2, 1.6, 2.0, 1.8, 1.5, 1.3, 1.0, 0.8])
# Per connected client, averaged: mostly video and browsing downstream.
BYTES_SENT_PER_CLIENT_S = 25_000.0
BYTES_RECEIVED_PER_CLIENT_S = 5_000.0
BYTES_PER_PACKET_SENT, BYTES_PER_PACKET_RECEIVED = 1_200.0, 400.0
BACKHAUL_BYTES_S = 100e6 / 8  # 100 Mbit/s fibre to the pole
# /12/x/2 Radio Enabled and /12/x/14 Standard codes; v1.1 of object 12 has none for 6 GHz
# or 802.11ax, so a 6 GHz radio leaves those two resources out.
RADIO_2_4, RADIO_5 = 1, 2
STANDARD_BGN, STANDARD_AC = 5, 6
BANDS = {"2.4GHz": ("2.4GHz",), "5GHz": ("5GHz",), "6GHz": ("6GHz",), "dual": ("2.4GHz", "5GHz")}
CLIENT_SHARE = {"2.4GHz": 0.4, "5GHz": 0.6, "6GHz": 1.0}
CHANNELS = {"2.4GHz": (1, 6, 11), "5GHz": (36, 44, 149, 157), "6GHz": (5, 37, 69)}
# /12/x/3 Status.
STATUS_UP, STATUS_ERROR = 1, 2
# ap_overloaded: connected clients at every hour, far above Fleet's default threshold (100).
OVERLOAD_CLIENTS = (300.0, 450.0)
# throughput_collapse: the share of the normal traffic that still gets through.
COLLAPSED_THROUGHPUT = 0.03


class Radio:
    __slots__ = ("band", "share", "channel", "bytes_sent", "bytes_received", "packets_sent",
                 "packets_received")

    def __init__(self, band: str, share: float, channel: int, history_s: float) -> None:
        self.band = band
        self.share = share
        self.channel = channel
        # Counters since the last reboot, some days ago.
        self.bytes_sent = int(history_s * BYTES_SENT_PER_CLIENT_S * share)
        self.bytes_received = int(history_s * BYTES_RECEIVED_PER_CLIENT_S * share)
        self.packets_sent = int(self.bytes_sent / BYTES_PER_PACKET_SENT)
        self.packets_received = int(self.bytes_received / BYTES_PER_PACKET_RECEIVED)


class AccessPoint(SimulatedDevice):
    kind = "wifi_ap"
    device_type = "public Wi-Fi access point"
    defaults = ("AirLink", "AL-6E", "5.0.3")
    bearer = ETHERNET
    power_sources = {0: POWER_OVER_ETHERNET}

    __slots__ = ("radios", "mean_clients", "ssid", "utilisation", "bssid", "wlan_status",
                 "overload_clients", "throughput_share")

    def __init__(self, spec: DeviceSpec, world, faults) -> None:
        super().__init__(spec, world, faults)
        noise = self.noise
        self.mean_clients = noise.uniform(8, 30) * self.activity
        bands = BANDS.get(spec.attributes.get("band") or "dual", BANDS["dual"])
        uptime_s = noise.uniform(1, 20) * 86_400 * self.mean_clients
        self.radios = [Radio(band, CLIENT_SHARE[band] if len(bands) > 1 else 1.0,
                             noise.choice(CHANNELS[band]), uptime_s) for band in bands]
        self.ssid = spec.attributes.get("ssid") or "Free_WiFi"
        self.utilisation = 0
        self.bssid = f"02{noise.randrange(1 << 40):010x}"
        self.wlan_status = STATUS_UP
        self.overload_clients: float | None = None
        self.throughput_share = 1.0

    @classmethod
    def variant(cls, spec: DeviceSpec) -> tuple:
        return BANDS.get(spec.attributes.get("band") or "dual", BANDS["dual"])

    @classmethod
    def tables(cls, spec: DeviceSpec) -> dict[tuple[int, int], InstanceTable]:
        tables = super().tables(spec)
        for instance, band in enumerate(cls.variant(spec)):
            tables[(12, instance)] = _radio_table(instance, band)
        tables[(4, 0)] = tables[(4, 0)] | {6: Resource(read=lambda d: d.utilisation)}
        return tables

    @property
    def reported(self) -> tuple[ResourcePath, ...]:
        return _REPORTED[len(self.radios)]

    def evolve(self, start: float, end: float) -> None:
        if self.wlan_status != STATUS_UP:
            self.utilisation = 0
            return
        clock = self.world.clock
        client_hours = self.mean_clients * CLIENTS.integral(clock.local_hours(start), clock.local_hours(end))
        if self.overload_clients is not None:
            client_hours = max(client_hours, self.overload_clients * (end - start) / 3600)
        client_seconds = client_hours * 3600 * self.noise.uniform(0.9, 1.1) * self.throughput_share
        for radio in self.radios:
            sent = client_seconds * radio.share * BYTES_SENT_PER_CLIENT_S
            received = client_seconds * radio.share * BYTES_RECEIVED_PER_CLIENT_S
            radio.bytes_sent += int(sent)
            radio.bytes_received += int(received)
            radio.packets_sent += int(sent / BYTES_PER_PACKET_SENT)
            radio.packets_received += int(received / BYTES_PER_PACKET_RECEIVED)
        rate = client_seconds * (BYTES_SENT_PER_CLIENT_S + BYTES_RECEIVED_PER_CLIENT_S) / (end - start)
        self.utilisation = min(100, round(100 * rate / BACKHAUL_BYTES_S))

    def strike(self, fault: str) -> None:
        self.advance()
        if fault == "ap_down":
            self.wlan_status = STATUS_ERROR
            self.error_code = PERIPHERAL_MALFUNCTION
            self.utilisation = 0
        elif fault == "ap_overloaded":
            self.overload_clients = self.noise.uniform(*OVERLOAD_CLIENTS)
        elif fault == "throughput_collapse":
            self.throughput_share = COLLAPSED_THROUGHPUT
        if fault in ("ap_down", "ap_overloaded", "throughput_collapse"):
            self.link.report_soon()
        super().strike(fault)

    def repair(self) -> None:
        self.advance()
        self.wlan_status = STATUS_UP
        self.overload_clients = None
        self.throughput_share = 1.0
        super().repair()


def _radio_table(instance: int, band: str) -> InstanceTable:
    def radio(device: AccessPoint) -> Radio:
        return device.radios[instance]

    table: InstanceTable = {
        0: constant(f"wlan{instance}"),
        1: constant(True),
        3: Resource(read=lambda d: d.wlan_status),
        4: Resource(read=lambda d: d.bssid[:-1] + str(instance)),
        5: Resource(read=lambda d: d.ssid, write=lambda d, v: setattr(d, "ssid", v)),
        6: constant(True),
        8: constant(0),  # access point
        9: Resource(read=lambda d: radio(d).channel),
        15: constant(0),  # open: city Wi-Fi signs in on a portal
        29: constant(True),
        33: Resource(read=lambda d: radio(d).bytes_sent),
        34: Resource(read=lambda d: radio(d).bytes_received),
        35: Resource(read=lambda d: radio(d).packets_sent),
        36: Resource(read=lambda d: radio(d).packets_received),
    }
    if band != "6GHz":
        table[2] = constant(RADIO_2_4 if band == "2.4GHz" else RADIO_5)
        table[14] = constant(STANDARD_BGN if band == "2.4GHz" else STANDARD_AC)
    return table


_REPORTED = {
    count: tuple(ResourcePath.parse(f"/12/{i}/{r}") for i in range(count) for r in (3, 33, 34, 35, 36))
    + (ResourcePath.parse("/4/0/6"),)
    for count in (1, 2)
}
