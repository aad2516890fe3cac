"""How full a bin will be: learning its fill rate per hour of the week from its readings, and
integrating that profile forward to the threshold and to full (pure: no I/O, no clock).

Learning is online, so the scheduler can keep a profile current from where it left off:
- consecutive accepted readings give one observation each: the fill gained over the hours
  between them (a gap longer than MAX_GAP_H, a full bin or an emptying in between gives none);
- a spike (a reading far off both neighbours that agree with each other) is ignored; its verdict
  waits for the next reading, so the newest reading is never consumed (`through` stays before it);
- a fall of more than DROP_MARGIN points is an emptying; so is a known one (Execute, crew stop);
- the observation's residual against the profile (gained − expected) is Huber-clipped at
  HUBER_K × residual_sd × √hours and spread over the hour-of-week slots the interval covers,
  each slot a weighted mean whose old weight decays with a DECAY_H time constant (recent weeks
  count more);
- residual_sd (percent per √hour) is the decayed RMS of the clipped residuals.

Prediction shrinks thinly observed slots towards the bin's own hour-of-day rate (pooled over the
weekdays) and steps hour by hour from the last reading. The uncertainty band treats the hourly
deviations from the profile as a random walk: after T hours the fill is expected ± Z × sd × √T
(Z = 1.28, an 80 % band); `low` is when the upper edge reaches the threshold, `high` the lower.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, tzinfo

SLOTS = 168
HOUR = timedelta(hours=1)
SPIKE = 20.0               # points off both neighbours (which agree within it): a sensor spike
DROP_MARGIN = 15.0         # points the fill must fall by to count as an emptying
FULL = 98.0                # a bin this full cannot show its rate any more
KNOWN_GRACE = timedelta(minutes=30)  # an Execute acknowledged after the reading that shows it
MAX_GAP_H = 24.0           # longer silences teach nothing about the hours in between
DECAY_H = 21 * 24.0        # weights fade by e every three weeks
HUBER_K = 2.0
SCALE_K = 3.0
DEFAULT_SD = 1.5           # percent per √hour, before a bin has taught its own
MIN_SD = 0.3
SHRINK = 1.0               # slot weight (hours observed) at which a slot counts as much as its hour's mean
MIN_HISTORY_H = 48.0       # hours of observed filling before a bin's own profile is used
Z_BAND = 1.2816
MAX_STEP_HOURS = 24 * 15


@dataclass(frozen=True, slots=True)
class Reading:
    at: datetime
    fill: float


@dataclass(frozen=True, slots=True)
class Emptying:
    at: datetime
    fill_before: float | None
    fill_after: float | None


@dataclass(frozen=True, slots=True)
class Profile:
    """A row of bin_fill_profiles: rates in percent per hour, slot 0 = Monday 00:00 local."""

    rates: tuple[float, ...] = (0.0,) * SLOTS
    weights: tuple[float, ...] = (0.0,) * SLOTS
    residual_sd: float | None = None
    last_fill: float | None = None
    last_fill_at: datetime | None = None
    last_emptied_at: datetime | None = None
    through: datetime | None = None

    @property
    def history_h(self) -> float:
        return sum(self.weights)


@dataclass(frozen=True, slots=True)
class Learned:
    profile: Profile
    drops: list[Emptying]   # emptyings seen in the fill that no known emptying explains


@dataclass(frozen=True, slots=True)
class Prediction:
    fill_until: float
    hours_to_threshold: float | None
    hours_to_threshold_low: float | None
    hours_to_threshold_high: float | None
    hours_to_full: float | None
    rate_per_hour: float    # mean over the next day


def slot_of(at: datetime, tz: tzinfo) -> int:
    local = at.astimezone(tz)
    return local.weekday() * 24 + local.hour


def _spread(start: datetime, end: datetime, tz: tzinfo) -> list[tuple[int, float]]:
    """The hour-of-week slots [start, end) covers, with the hours spent in each."""
    out: list[tuple[int, float]] = []
    local = start.astimezone(tz)
    total = (end - start).total_seconds() / 3600
    slot = local.weekday() * 24 + local.hour
    into = local.minute / 60 + local.second / 3600
    while total > 1e-9:
        span = min(1.0 - into, total)
        out.append((slot, span))
        total -= span
        slot, into = (slot + 1) % SLOTS, 0.0
    return out


def _spike(prev: Reading, cur: Reading, nxt: Reading) -> bool:
    return (abs(cur.fill - prev.fill) > SPIKE and abs(cur.fill - nxt.fill) > SPIKE
            and abs(prev.fill - nxt.fill) <= SPIKE)


def learn(profile: Profile | None, readings: Sequence[Reading], known: Sequence[datetime],
          tz: tzinfo) -> Learned:
    """The profile advanced over `readings` (sorted, all after `profile.through`); `known` are
    the emptyings recorded otherwise (Execute, crew stops) around them."""
    profile = profile or Profile()
    rates, weights = list(profile.rates), list(profile.weights)
    var = (profile.residual_sd or DEFAULT_SD) ** 2
    var_weight = 0.0 if profile.residual_sd is None else 1.0
    anchor = Reading(profile.last_fill_at, profile.last_fill) \
        if profile.last_fill_at is not None and profile.last_fill is not None else None
    emptied_at, through, drops = profile.last_emptied_at, profile.through, []
    known = sorted(known)
    decayed_to = profile.through
    for i, cur in enumerate(readings):
        if i + 1 == len(readings) and anchor is not None:
            break  # its neighbour on the right has not come yet
        through = cur.at
        if anchor is None:
            anchor = cur
            continue
        if i + 1 < len(readings) and _spike(anchor, cur, readings[i + 1]):
            continue
        # A known emptying explains a fall a little before it is acknowledged too; one whose
        # interval shows no fall at all was already seen in an earlier reading.
        between = [k for k in known if anchor.at < k <= cur.at + KNOWN_GRACE]
        dropped = cur.fill < anchor.fill - DROP_MARGIN
        if dropped or (between and between[0] <= cur.at and cur.fill < anchor.fill):
            if dropped and not between:
                drops.append(Emptying(cur.at, anchor.fill, cur.fill))
            emptied_at = max(min(between[-1], cur.at) if between else cur.at, emptied_at or cur.at)
            anchor = cur
            continue
        hours = (cur.at - anchor.at).total_seconds() / 3600
        if 0 < hours <= MAX_GAP_H and anchor.fill < FULL:
            if decayed_to is not None and cur.at > decayed_to:
                fade = math.exp(-(cur.at - decayed_to).total_seconds() / 3600 / DECAY_H)
                weights = [w * fade for w in weights]
                var_weight *= fade
            decayed_to = cur.at
            spread = _spread(anchor.at, cur.at, tz)
            seen_h = sum(h for s, h in spread if weights[s] > 0)
            # Slots never seen are taken to fill like the seen ones of the interval (or, when none
            # is, like the interval's mean), so the residual is not blamed on the seen ones.
            guess = (sum(rates[s] * h for s, h in spread if weights[s] > 0) / seen_h if seen_h
                     else (cur.fill - anchor.fill) / hours)
            expected = sum((rates[s] if weights[s] > 0 else guess) * h for s, h in spread)
            residual = (cur.fill - anchor.fill) - expected
            limit = HUBER_K * math.sqrt(var * hours)
            clipped = max(-limit, min(limit, residual))
            per_hour = clipped / hours
            for s, h in spread:
                target = (rates[s] if weights[s] > 0 else guess) + per_hour
                weights[s] += h
                rates[s] += (target - rates[s]) * h / weights[s]
            if seen_h >= hours - 1e-9:
                # Only a residual the profile predicted out of sample measures the noise; clipped
                # wider than the rates' clip so the estimate does not shrink itself.
                var_weight += 1.0
                var += (min(residual ** 2, SCALE_K ** 2 * var * hours) / hours - var) / var_weight
        anchor = cur
    sd = max(MIN_SD, math.sqrt(var)) if var_weight > 0 else profile.residual_sd
    return Learned(replace(profile, rates=tuple(rates), weights=tuple(weights), residual_sd=sd,
                           last_fill=anchor.fill if anchor else None,
                           last_fill_at=anchor.at if anchor else None,
                           last_emptied_at=emptied_at, through=through), drops)


def effective_rates(profile: Profile) -> list[float]:
    """Rates to predict with: each slot shrunk towards its hour of day over the week, never < 0."""
    rates, weights = profile.rates, profile.weights
    hourly = []
    for hour in range(24):
        total = sum(weights[hour::24])
        hourly.append(sum(r * w for r, w in zip(rates[hour::24], weights[hour::24])) / total
                      if total > 0 else 0.0)
    return [max(0.0, (r * w + hourly[s % 24] * SHRINK) / (w + SHRINK))
            for s, (r, w) in enumerate(zip(rates, weights))]


def mean_profile(rates: Sequence[Sequence[float]], sds: Sequence[float]) -> tuple[list[float], float]:
    """The mean of several bins' effective rates (a district's or a city's, for borrowing)."""
    n = len(rates)
    return [sum(r[s] for r in rates) / n for s in range(SLOTS)], sum(sds) / n


def predict(rates: Sequence[float], sd: float, fill: float, fill_at: datetime, now: datetime,
            until: datetime, threshold: float, tz: tzinfo, *, horizon: datetime | None = None) -> Prediction:
    """Step the rates from the reading at `fill_at` on; hours are counted from `now` (0 if the
    bin is already there) and are None beyond `horizon` (default `until`)."""
    horizon = max(horizon or until, until)
    local = fill_at.astimezone(tz)
    slot = local.weekday() * 24 + local.hour
    lead_h = (now - fill_at).total_seconds() / 3600
    until_h = (until - fill_at).total_seconds() / 3600
    end_h = min((horizon - fill_at).total_seconds() / 3600, MAX_STEP_HOURS + lead_h)
    width = Z_BAND * sd
    mid = low = high = full = fill_until = None
    t, level, step = 0.0, fill, 1.0 - (local.minute * 60 + local.second) / 3600
    day_gain = day_h = 0.0
    if level >= threshold:
        mid = low = high = 0.0
    if level >= 100.0:
        full = 0.0
    while t < end_h and (high is None or full is None or fill_until is None):
        rate = rates[slot]
        span = min(step, end_h - t)
        after = level + rate * span
        if fill_until is None and t + span >= until_h:
            fill_until = level + rate * max(0.0, until_h - t)
        # The expected fill is exact within the hour; the band's edges are checked hour by hour.
        if mid is None and after >= threshold:
            mid = max(0.0, t + (threshold - level) / rate - lead_h)
        if full is None and after >= 100.0:
            full = max(0.0, t + (100.0 - level) / rate - lead_h)
        if lead_h <= t < lead_h + 24:
            day_gain, day_h = day_gain + rate * span, day_h + span
        level, t = after, t + span
        band = width * math.sqrt(t)
        if low is None and level + band >= threshold:
            low = max(0.0, t - lead_h)
        if high is None and level - band >= threshold:
            high = max(0.0, t - lead_h)
        slot, step = (slot + 1) % SLOTS, 1.0
    # A bin holds no more than full: the fill expected stops at 100 % (an overflowing bin's
    # reading above that stays what it read).
    expected = min(level if fill_until is None else fill_until, max(100.0, fill))
    return Prediction(expected, mid, low, high, full,
                      day_gain / day_h if day_h else 0.0)
