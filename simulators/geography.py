"""Where a city's districts are, so simulated devices stand on plausible streets."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class District:
    name: str
    lat: float
    lon: float
    # Rough radius of the built-up core, in metres.
    radius_m: float = 1500.0


# Seoul's 25 autonomous districts (gu), centred on their district offices.
SEOUL = (
    District("Jongno-gu", 37.5730, 126.9794), District("Jung-gu", 37.5641, 126.9979, 1000),
    District("Yongsan-gu", 37.5324, 126.9906), District("Seongdong-gu", 37.5634, 127.0369),
    District("Gwangjin-gu", 37.5385, 127.0823), District("Dongdaemun-gu", 37.5744, 127.0396),
    District("Jungnang-gu", 37.6063, 127.0926), District("Seongbuk-gu", 37.5894, 127.0167),
    District("Gangbuk-gu", 37.6396, 127.0257), District("Dobong-gu", 37.6688, 127.0471),
    District("Nowon-gu", 37.6542, 127.0568), District("Eunpyeong-gu", 37.6027, 126.9291),
    District("Seodaemun-gu", 37.5791, 126.9368), District("Mapo-gu", 37.5663, 126.9019),
    District("Yangcheon-gu", 37.5170, 126.8665), District("Gangseo-gu", 37.5509, 126.8495),
    District("Guro-gu", 37.4954, 126.8874), District("Geumcheon-gu", 37.4569, 126.8955, 1200),
    District("Yeongdeungpo-gu", 37.5264, 126.8962), District("Dongjak-gu", 37.5124, 126.9393),
    District("Gwanak-gu", 37.4784, 126.9516), District("Seocho-gu", 37.4837, 127.0324),
    District("Gangnam-gu", 37.5172, 127.0473), District("Songpa-gu", 37.5145, 127.1059),
    District("Gangdong-gu", 37.5301, 127.1238),
)


def place(district: District, rng: random.Random) -> tuple[float, float]:
    """A point within the district's core, denser towards its centre."""
    distance = district.radius_m * math.sqrt(rng.random())
    bearing = rng.uniform(0, 2 * math.pi)
    dlat = distance * math.cos(bearing) / 111_320
    dlon = distance * math.sin(bearing) / (111_320 * math.cos(math.radians(district.lat)))
    return round(district.lat + dlat, 6), round(district.lon + dlon, 6)


# How busy each district's streets are relative to the city's average (floating population
# and commerce): busier streets fill bins faster and crowd access points. Unknown names get 1.0.
STREET_ACTIVITY = {
    "Jung-gu": 1.8, "Gangnam-gu": 1.7, "Jongno-gu": 1.6, "Mapo-gu": 1.4, "Yeongdeungpo-gu": 1.4,
    "Seocho-gu": 1.3, "Songpa-gu": 1.3, "Yongsan-gu": 1.2, "Gwangjin-gu": 1.2,
    "Seodaemun-gu": 1.1, "Dongdaemun-gu": 1.1, "Gwanak-gu": 1.1, "Seongdong-gu": 1.0,
    "Guro-gu": 1.0, "Dongjak-gu": 0.9, "Seongbuk-gu": 0.9, "Gangseo-gu": 0.9,
    "Yangcheon-gu": 0.9, "Gangdong-gu": 0.9, "Geumcheon-gu": 0.9, "Nowon-gu": 0.8,
    "Eunpyeong-gu": 0.8, "Jungnang-gu": 0.8, "Gangbuk-gu": 0.7, "Dobong-gu": 0.7,
}


def activity(district: str | None) -> float:
    return STREET_ACTIVITY.get(district or "", 1.0)


def centre(districts: tuple[District, ...]) -> tuple[float, float]:
    """The mean position of a city's districts: where its sun rises and sets, near enough."""
    return (sum(d.lat for d in districts) / len(districts),
            sum(d.lon for d in districts) / len(districts))
