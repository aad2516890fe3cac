"""How a campaign's devices split into waves: a canary, then waves that grow or stay one size."""

from __future__ import annotations

import math

from fleet.campaigns.models import Waves


def wave_sizes(devices: int, waves: Waves) -> list[int]:
    """Sizes of the waves, canary first; they add up to `devices` (none when there are none).

    A canary of a percentage is at least one device. Growing waves multiply the wave before by
    the factor (rounded up, so a factor above 1 always grows); the last wave takes what is left.
    """
    if devices <= 0:
        return []
    if waves.canary is not None:
        canary = waves.canary
    else:
        canary = math.ceil(devices * (waves.canary_percent or 1.0) / 100)
    sizes = [min(max(canary, 1), devices)]
    left = devices - sizes[0]
    while left > 0:
        if waves.size is not None:
            size = waves.size
        else:
            size = max(math.ceil(sizes[-1] * (waves.growth or 1.0)), 1)
        sizes.append(min(size, left))
        left -= sizes[-1]
    return sizes
