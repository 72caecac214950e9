"""Throttles whose stored state stays small, and throttling that also counts refused requests.

DRF's rate throttles keep, per client, the time of every request within the
period, and read and rewrite that whole list on every request. At the
documented 6,000 requests a minute that is up to 6,000 timestamps (about 70 kB
in the database cache) and a millisecond of work per request. The throttles
here count requests per sixtieth of the period instead: at most 61 counters.

DRF checks authentication and permissions before throttles, so requests that
end in 401 (no credentials, a guessed token) would never be limited.
:class:`ThrottleBeforeAuthMixin` throttles them first; DRF has no such setting.

What the sliced state buys grows with the client's rate (``bench/bespoke.py``,
database cache, SQLite). Alone, ours takes 0.28 ms whatever the rate; DRF's as
much with no request of the client stored, 0.42 ms with 1,000 and 1.46 ms with
6,000, the documented user rate. In whole one-day requests that is nothing up to
1,000 and 0.9 ms (12 to 16 % of the request) at 6,000. Under ``make load``
with an unlimited rate DRF's list passed 10,000 times; there this throttle, the
token cache and the chunked fetch together raised throughput by about 30 % on
SQLite and 15 % on MariaDB (docs/performance.md, "Load"). It stays because a
throttle matters most for the clients that ask most.
"""

from __future__ import annotations

import math
from typing import Any

from rest_framework import throttling
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

# Slices of the period that requests are counted in.
SLICES = 60


class SlicedRateThrottle(throttling.SimpleRateThrottle):
    """A rate throttle that counts requests per slice (a sixtieth) of the period.

    A request is allowed while fewer than the rate's number of requests were
    allowed in the slices the last period touches: the current one and the 60
    before it. So, for one server's requests in turn and a clock that does not
    step back, the rate is never exceeded in any window of one period; the oldest
    slice still counts in full, which can refuse a request up to one slice (one
    second of a minute) sooner than a list of exact times would. Requests that
    several workers serve at the same moment can race, as with DRF's throttles:
    the cache is read, then written.

    The stored state is the slice length and ``{slice number: requests}``, never
    more than 61 entries, under its own cache key (DRF's throttles, e.g. in a
    worker of an older release, keep a list of times under theirs). Counts kept
    with another slice length (the rate's period changed) are dropped.
    """

    cache_format = "throttle-slices_%(scope)s_%(ident)s"
    # Set by DRF from the rate (the stubs do not declare them).
    num_requests: int
    duration: int

    def allow_request(self, request: Request, view: Any) -> bool:
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        self.now = self.timer()
        current = self._slice(self.now)
        stored = self.cache.get(self.key)
        counts = (
            stored[1] if isinstance(stored, tuple) and stored[0] == self._slice_seconds() else {}
        )
        # The slices of the window; any "later" ones are from before the clock stepped back.
        self.counts = {
            number: count
            for number, count in counts.items()
            if current - SLICES <= number <= current
        }
        if sum(self.counts.values()) >= self.num_requests:
            return self.throttle_failure()
        self.counts[current] = self.counts.get(current, 0) + 1
        # Kept until the slice just counted has left the window; whole seconds, because the
        # database cache stores expiry times without their fraction.
        timeout = math.ceil(self.duration + self._slice_seconds()) + 1
        self.cache.set(self.key, (self._slice_seconds(), self.counts), timeout)
        return True

    def wait(self) -> float | None:
        """Seconds until enough of the oldest slices have left the window for one more request."""
        if self.num_requests == 0:
            return float(self.duration)  # never, but DRF's throttles say one period too
        # Requests that must leave the window before one more fits.
        excess = sum(self.counts.values()) - self.num_requests + 1
        for number in sorted(self.counts):
            excess -= self.counts[number]
            if excess <= 0:
                # Slice ``number`` stops counting once the current slice is ``number + 61``.
                leaves_at = (number + SLICES + 1) * self._slice_seconds()
                return max(leaves_at - self.now, 0.0)
        return None

    def _slice_seconds(self) -> float:
        return float(self.duration) / SLICES

    def _slice(self, moment: float) -> int:
        return math.floor(moment / self._slice_seconds())


class AnonRateThrottle(SlicedRateThrottle, throttling.AnonRateThrottle):
    """DRF's per-IP limit for anonymous requests (scope ``anon``), counted per slice."""


class UserRateThrottle(SlicedRateThrottle, throttling.UserRateThrottle):
    """DRF's per-user limit (scope ``user``; per IP when anonymous), counted per slice."""


class ThrottleBeforeAuthMixin:
    """Check throttles before a request can be refused for its credentials."""

    def perform_authentication(self, request: Request) -> None:
        try:
            request.user  # noqa: B018 - authenticates the request
        except AuthenticationFailed:
            # A failed token counts as an anonymous request against the limit.
            self.check_throttles(request)
            raise

    def check_permissions(self, request: Request) -> None:
        self.check_throttles(request)
        super().check_permissions(request)  # type: ignore[misc]

    def check_throttles(self, request: Request) -> None:
        if getattr(request, "_throttles_checked", False):
            return
        request._throttles_checked = True  # type: ignore[attr-defined]
        super().check_throttles(request)  # type: ignore[misc]
