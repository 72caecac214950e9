"""Throttles whose stored state stays small, and throttling that also counts refused requests.

DRF's rate throttles keep, per client, the time of every request within the
period, and read and rewrite that whole list on every request. At the
documented 6,000 requests a minute that is up to 6,000 timestamps (about 70 kB
in the database cache) and a millisecond of work per request. The throttles
here count requests per sixtieth of the period instead: at most 61 counters.

DRF checks authentication and permissions before throttles, so requests that
end in 401 (no credentials, a guessed token) would never be limited.
:class:`ThrottleBeforeAuthMixin` throttles them first.
"""

from __future__ import annotations

import math
from collections import Counter
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
    before it. So the rate is never exceeded in any window of one period; the
    oldest slice still counts in full, which can refuse a request up to one
    slice (one second of a minute) sooner than a list of exact times would.
    The stored state is ``{slice number: requests}``, never more than 61 entries.
    """

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
        if not isinstance(stored, dict):  # nothing yet, or DRF's list of request times
            stored = Counter(map(self._slice, stored)) if isinstance(stored, list) else {}
        self.counts = {
            number: count for number, count in stored.items() if number >= current - SLICES
        }
        if sum(self.counts.values()) >= self.num_requests:
            return self.throttle_failure()
        self.counts[current] = self.counts.get(current, 0) + 1
        # Kept until the slice just counted has left the window.
        self.cache.set(self.key, self.counts, self.duration + self._slice_seconds())
        return True

    def wait(self) -> float | None:
        """Seconds until enough of the oldest slices have left the window for one more request."""
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
