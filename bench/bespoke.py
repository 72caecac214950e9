"""What each bespoke module of the API buys: the one-day request with it and with the library's way.

Builds the database of ``bench/api_speed.py`` (30 days of rows of both KPIs) and
times, in one process with Django's test client, the one-day request (936 rows)
as JSON and as CSV, first as shipped and then with one module at a time replaced
by what Django, DRF or django-filter do without it:

* ``listing.py`` off: DRF's ``ListAPIView.list``, a ModelSerializer over model instances;
* ``listing.py`` one fetch: the rows fetched at once, not 256 at a time;
* ``renderers.py`` JSON off: DRF's ``JSONRenderer`` over the row dicts;
* ``renderers.py`` CSV line format off: the ``csv`` module over the row dicts;
* ``throttling.py`` off: DRF's own ``AnonRateThrottle`` and ``UserRateThrottle``, with no,
  1,000 or 6,000 request times of the last minute stored for the client (set before each
  request: DRF keeps one per request, up to the rate, 6,000/minute for a user);
* ``authentication.py`` off: DRF's ``TokenAuthentication`` (a query per request);
* ``middleware.py`` ETag, the other way round: the middleware now uses Django's tag (an
  MD5 of the body); this variant puts back the SHA-256 tag it had;
* ``filters.py``, the other way round: django-filter now builds its form class per
  request; this variant puts back the cache of one form class per model it had;
* all of them off at once (DRF's throttles with no time stored: their cheapest case).

Then it times alone, in many rounds, the pieces whose difference a whole request
cannot show above the noise of a busy machine: the throttle, the token check, the
filter form and the ETag.

Each round runs every variant once, in a new random order, so that a machine whose
speed drifts slows them alike and none always follows the same one; the patches
and a garbage collection are done outside each timed request. Prints the
median wall and CPU time of each and its difference to "as shipped", in ms and as
a share of the shipped request. Every variant's body is checked to equal the shipped one.

Run: .venv/bin/python bench/bespoke.py [--repeat 200] [--database mysql --mysql-url URL]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_speed import DAY, database_arguments, days_of_rows
from load import YEAR_START

Patch = Callable[[], contextlib.AbstractContextManager[Any]]


def _listing_off() -> contextlib.AbstractContextManager[Any]:
    # Without a plan, ValuesListMixin.list hands over to DRF's ListAPIView.list.
    return mock.patch("kpis.api.listing.cached_plan", return_value=None)


def _one_fetch() -> contextlib.AbstractContextManager[Any]:
    return mock.patch("kpis.api.listing._FETCH_ROWS", 10**9)


def _json_renderer_off() -> contextlib.AbstractContextManager[Any]:
    # The view then hands the renderer the list of row dicts, which it passes to DRF's.
    return mock.patch("kpis.api.renderers.JsonRenderer.renders_row_columns", False)


def _csv_lines_off() -> contextlib.AbstractContextManager[Any]:
    return mock.patch("kpis.api.renderers.CsvRenderer.renders_row_columns", False)


def _throttling_off() -> contextlib.AbstractContextManager[Any]:
    from rest_framework import throttling

    from kpis.api.views import KpiRowsView

    classes = [throttling.AnonRateThrottle, throttling.UserRateThrottle]
    return mock.patch.object(KpiRowsView, "throttle_classes", classes)


def _drf_history(length: int) -> Patch:
    """DRF's throttles, with ``length`` request times of the last minute already stored.

    DRF keeps every request time of the period: a client asking at the documented
    6,000/minute holds up to 6,000 of them, which each request reads and rewrites.
    """

    @contextlib.contextmanager
    def patch() -> Iterator[None]:
        from django.contrib.auth import get_user_model
        from django.core.cache import cache
        from rest_framework.throttling import UserRateThrottle

        user = get_user_model().objects.get(username="speed")
        now = UserRateThrottle.timer()
        # Newest first, spread over the last minute, as DRF stores them.
        history = [now - index * 60 / length for index in range(length)]
        cache.set(f"throttle_user_{user.pk}", history, 60)
        with _throttling_off():
            yield

    return patch


def _token_cache_off() -> contextlib.AbstractContextManager[Any]:
    from django.test import override_settings

    return override_settings(KPI_API_TOKEN_CACHE_SECONDS=0)


def _sha256_etag() -> contextlib.AbstractContextManager[Any]:
    from django.http import HttpResponseBase
    from django.utils.http import quote_etag

    # The bespoke tag the middleware had: SHA-256, which CPUs with SHA extensions run in
    # hardware, in place of Django's MD5.
    def sha256_etag(response: HttpResponseBase) -> HttpResponseBase:
        content = getattr(response, "content", b"")
        if not response.streaming and content:
            response.headers["ETag"] = quote_etag(hashlib.sha256(content).hexdigest()[:32])
        return response

    return mock.patch("kpis.api.middleware.set_response_etag", sha256_etag)


def _form_class_cache() -> contextlib.AbstractContextManager[Any]:
    """The bespoke cache the filters had: django-filter's form class built once per model."""
    from django_filters.filterset import BaseFilterSet

    from kpis.api.filters import IntervalFilter

    built: dict[tuple[type[Any], type[Any]], Any] = {}

    def get_form_class(self: Any) -> Any:
        key = (type(self), self.queryset.model)
        if key not in built:
            built[key] = BaseFilterSet.get_form_class(self)
        return built[key]

    return mock.patch.object(IntervalFilter, "get_form_class", get_form_class)


@contextlib.contextmanager
def _all_off() -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for patch in (_listing_off, _drf_history(0), _token_cache_off):
            stack.enter_context(patch())
        yield


VARIANTS: dict[str, Patch | None] = {
    "as shipped": None,
    "listing.py off (ModelSerializer)": _listing_off,
    "listing.py: one fetch of all rows": _one_fetch,
    "renderers.py: DRF's JSONRenderer": _json_renderer_off,
    "renderers.py: csv module": _csv_lines_off,
    "throttling.py off, no time stored": _drf_history(0),
    "throttling.py off, 1,000 times stored": _drf_history(1000),
    "throttling.py off, 6,000 times stored": _drf_history(6000),
    "authentication.py off (DRF's check)": _token_cache_off,
    "middleware.py: SHA-256 ETag (bespoke)": _sha256_etag,
    "filters.py: form class cache (bespoke)": _form_class_cache,
    "all of them off": _all_off,
}


def measure(kpi: int, repeat: int) -> dict[str, dict[str, tuple[float, float]]]:
    """Median wall and CPU ms of each variant's JSON and CSV request.

    ``{format: {variant: (wall ms, CPU ms)}}``; on a busy machine the CPU time is the
    steadier figure (with SQLite it includes the database's work).
    """
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    user, _ = get_user_model().objects.get_or_create(username="speed")
    token = Token.objects.get_or_create(user=user)[0].key
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    start, end = DAY
    path = (
        f"/api/KPIs/{kpi}/?interval_start_timestamp__gte={start}&interval_end_timestamp__lte={end}"
    )
    formats = {"JSON": path, "CSV": path + "&format=csv"}

    def timed(url: str, patch: Patch | None) -> tuple[tuple[float, float], bytes]:
        with patch() if patch is not None else contextlib.nullcontext():
            # The garbage of the variant before (a ModelSerializer's thousands of objects)
            # would otherwise be collected, and charged, in this request.
            gc.collect()
            started, started_cpu = time.perf_counter(), time.process_time()
            response = client.get(url)
            elapsed = time.perf_counter() - started, time.process_time() - started_cpu
        assert response.status_code == 200, response.content[:300]
        return elapsed, bytes(response.content)

    shipped = {name: timed(url, None)[1] for name, url in formats.items()}
    for name, url in formats.items():  # warm every path, and check it answers the same
        for variant, patch in VARIANTS.items():
            body = timed(url, patch)[1]
            assert body == shipped[name], f"{variant} changes the {name} body"
    times: dict[str, dict[str, list[tuple[float, float]]]] = {
        name: {variant: [] for variant in VARIANTS} for name in formats
    }
    # A new order every round: no variant always follows the same one.
    order = random.Random(20261204)
    for _ in range(repeat):
        runs = [(name, variant) for name in formats for variant in VARIANTS]
        order.shuffle(runs)
        for name, variant in runs:
            times[name][variant].append(timed(formats[name], VARIANTS[variant])[0])
    return {
        name: {
            variant: (
                statistics.median(wall for wall, _ in values) * 1000,
                statistics.median(cpu for _, cpu in values) * 1000,
            )
            for variant, values in by_variant.items()
        }
        for name, by_variant in times.items()
    }


def _cpu_ms(action: Callable[[], object], repeat: int, before: Callable[[], object]) -> float:
    """Median CPU ms of ``action``, with ``before`` run untimed ahead of each call."""
    before()
    action()  # warm
    times = []
    for _ in range(repeat):
        before()
        started = time.process_time()
        action()
        times.append(time.process_time() - started)
    return statistics.median(times) * 1000


def parts(repeat: int) -> list[tuple[str, str, float, float]]:
    """(module, the other way, ms as shipped, ms the other way), each piece alone.

    The other way is the library's for the modules that stayed, and the bespoke code
    that went for those that went back to the library (filters.py, middleware.py).

    The differences that a whole request cannot show above the machine's noise: the
    throttle, the token check, the filter form and the ETag, timed on their own in
    many rounds.
    """
    from django.contrib.auth import get_user_model
    from django.core.cache import cache
    from django.http import HttpResponse
    from django.utils.cache import set_response_etag
    from rest_framework import throttling as drf_throttling
    from rest_framework.authentication import TokenAuthentication
    from rest_framework.authtoken.models import Token
    from rest_framework.request import Request
    from rest_framework.test import APIClient, APIRequestFactory

    from kpis.api import throttling
    from kpis.api.authentication import CachedTokenAuthentication
    from kpis.api.filters import IntervalFilter
    from kpis.api.views import KpiRowsView

    user, _ = get_user_model().objects.get_or_create(username="speed")
    key = Token.objects.get_or_create(user=user)[0].key
    request = Request(APIRequestFactory().get("/api/KPIs/1/"))
    request.user = user
    nothing = lambda: None  # noqa: E731

    def stored(length: int) -> Callable[[], None]:
        def fill() -> None:
            now = drf_throttling.UserRateThrottle.timer()
            history = [now - index * 60 / length for index in range(length)]
            cache.set(f"throttle_user_{user.pk}", history, 60)

        return fill

    def allow(throttle_class: type[drf_throttling.SimpleRateThrottle]) -> Callable[[], bool]:
        return lambda: throttle_class().allow_request(request, None)

    rows: list[tuple[str, str, float, float]] = []
    sliced = _cpu_ms(allow(throttling.UserRateThrottle), repeat, nothing)
    for length in (0, 1000, 6000):
        drf = _cpu_ms(allow(drf_throttling.UserRateThrottle), repeat, stored(length))
        rows.append(("throttling.py", f"DRF's throttle, {length:,} times stored", sliced, drf))

    cached = CachedTokenAuthentication()
    plain = TokenAuthentication()
    rows.append(
        (
            "authentication.py",
            "DRF's token check",
            _cpu_ms(lambda: cached.authenticate_credentials(key), repeat, nothing),
            _cpu_ms(lambda: plain.authenticate_credentials(key), repeat, nothing),
        )
    )

    start, end = DAY
    query = {"interval_start_timestamp__gte": start, "interval_end_timestamp__lte": end}
    queryset = KpiRowsView(kwargs={"kpi_id": "1"}).get_queryset()
    with _form_class_cache():
        with_cache = _cpu_ms(lambda: IntervalFilter(query, queryset=queryset).qs, repeat, nothing)
    without = _cpu_ms(lambda: IntervalFilter(query, queryset=queryset).qs, repeat, nothing)
    rows.append(("filters.py", "the form class cache it had (bespoke)", without, with_cache))

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    body = client.get(f"/api/KPIs/1/?{'&'.join(f'{k}={v}' for k, v in query.items())}").content

    def sha256_tag() -> str:
        return hashlib.sha256(body).hexdigest()[:32]

    rows.append(
        (
            "middleware.py",
            f"the SHA-256 tag it had (bespoke), {len(body):,} bytes",
            _cpu_ms(lambda: set_response_etag(HttpResponse(body)), repeat, nothing),
            _cpu_ms(lambda: (HttpResponse(body), sha256_tag()), repeat, nothing),
        )
    )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    database_arguments(parser, suffix="_bespoke", repeat=200)
    parser.add_argument(
        "--kpis", type=int, nargs="*", default=[1, 2], help="KPI ids (1 2; none: only the pieces)."
    )
    parser.add_argument(
        "--parts-repeat", type=int, default=3000, help="Rounds of each piece alone (3000)."
    )
    args = parser.parse_args()

    with days_of_rows(args, suffix="_bespoke") as rows:
        load = os.getloadavg()
        print(
            f"{args.database}: {rows} KPI rows ({args.days} days from {YEAR_START:%Y-%m-%d});"
            f" one day = {DAY[0]} to {DAY[1]}; medians of {args.repeat} rounds;"
            f" load average {load[0]:.2f} at the start"
        )
        for kpi in args.kpis:
            figures = measure(kpi, args.repeat)
            for name, by_variant in figures.items():
                base_wall, base_cpu = by_variant["as shipped"]
                print(f"  KPI {kpi} {name}: wall ms, difference; CPU ms, difference")
                for variant, (wall, cpu) in by_variant.items():
                    print(
                        f"    {variant:40} {wall:7.2f} {wall - base_wall:+6.2f}"
                        f" ({(wall - base_wall) / base_wall * 100:+6.1f} %)"
                        f"  {cpu:7.2f} {cpu - base_cpu:+6.2f}"
                        f" ({(cpu - base_cpu) / base_cpu * 100:+6.1f} %)"
                    )
        print(f"  each piece alone, median CPU ms of {args.parts_repeat} rounds:")
        for module, other, shipped, instead in parts(args.parts_repeat):
            print(
                f"    {module:18} as shipped {shipped:6.3f} ms; {other}: {instead:6.3f} ms"
                f" ({instead - shipped:+.3f} ms)"
            )
        print(f"  load average {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
