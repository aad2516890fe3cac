"""Per-device random streams: reproducible from (seed, endpoint), whatever order events run in.

random.Random keeps ~2.5 KB of Mersenne Twister state; ten thousand of them cost more memory
than the devices themselves. SplitMix64 needs one integer of state and is plenty for noise.
"""

from __future__ import annotations

import hashlib
import math

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_TWO_PI = 2 * math.pi


def stream_seed(seed: int, name: str) -> int:
    """A 64-bit starting state for the stream called name under seed."""
    digest = hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class Noise:
    __slots__ = ("state",)

    def __init__(self, seed: int, name: str = "") -> None:
        self.state = stream_seed(seed, name)

    def random(self) -> float:
        """Uniform in [0, 1)."""
        self.state = z = (self.state + _GOLDEN) & _MASK
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        return ((z ^ (z >> 31)) >> 11) * (1.0 / (1 << 53))

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * self.random()

    def gauss(self, mu: float = 0.0, sigma: float = 1.0) -> float:
        # Box-Muller; 1 - random() keeps log() away from zero.
        radius = math.sqrt(-2.0 * math.log(1.0 - self.random()))
        return mu + sigma * radius * math.cos(_TWO_PI * self.random())

    def expovariate(self, rate: float) -> float:
        return -math.log(1.0 - self.random()) / rate

    def randrange(self, stop: int) -> int:
        return int(self.random() * stop)

    def choice(self, options):
        return options[int(self.random() * len(options))]

    def chance(self, probability: float) -> bool:
        return probability > 0 and self.random() < probability
