"""Prometheus metrics, read from the database at scrape time.

The update runs under cron, in another process, so nothing is counted in
memory here: each scrape builds a fresh registry around a collector that
queries the ledger and the run history.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from kpis import selectors


class KpiCollector(Collector):
    """The freshness of the KPIs, the file ledger's totals and the last update runs."""

    def collect(self) -> Iterator[Metric]:
        latest = selectors.latest_interval_end()
        if latest is not None:
            yield GaugeMetricFamily(
                "kpi_latest_interval_end_timestamp_seconds",
                "End of the newest five-minute interval with accepted rows (Unix time).",
                value=latest.timestamp(),
            )

        # Gauges, not counters: a file rewritten in place replaces its counts, so they can
        # fall; Prometheus keeps the _total suffix for counters.
        files = GaugeMetricFamily(
            "kpi_ledger_files",
            "Raw files in the ledger, by status.",
            labels=["status"],
        )
        for status, count in selectors.file_counts_by_status().items():
            files.add_metric([status], count)
        yield files

        rows = GaugeMetricFamily(
            "kpi_ledger_rows",
            "Rows of the counted files, accepted or rejected.",
            labels=["result"],
        )
        for result, count in selectors.row_counts().items():
            rows.add_metric([result], count)
        yield rows

        yield from self._runs()

    def _runs(self) -> Iterator[Metric]:
        history = selectors.run_history()
        runs = GaugeMetricFamily(
            "kpi_update_runs",
            "update_network_stats runs in the kept history, by exit status.",
            labels=["exit_status"],
        )
        for status, count in sorted(history.runs_by_exit_status.items()):
            runs.add_metric([str(status)], count)
        yield runs
        last = history.last
        if last is not None:
            yield GaugeMetricFamily(
                "kpi_update_last_run_end_timestamp_seconds",
                "When the last update_network_stats run ended (Unix time).",
                value=last.finished_at.timestamp(),
            )
            yield GaugeMetricFamily(
                "kpi_update_last_run_duration_seconds",
                "How long the last update_network_stats run took.",
                value=last.duration_seconds,
            )
            yield GaugeMetricFamily(
                "kpi_update_last_run_exit_status",
                "Exit status of the last update_network_stats run (0: all files read).",
                value=last.exit_status,
            )
        if history.last_success_at is not None:
            yield GaugeMetricFamily(
                "kpi_update_last_success_timestamp_seconds",
                "When the last update_network_stats run with exit status 0 ended (Unix time).",
                value=history.last_success_at.timestamp(),
            )
        if history.last_failure_at is not None:
            yield GaugeMetricFamily(
                "kpi_update_last_failure_timestamp_seconds",
                "When the last failed update_network_stats run ended (Unix time).",
                value=history.last_failure_at.timestamp(),
            )


def metrics_exposition(accept: str) -> tuple[bytes, str]:
    """The metrics as text in the format ``accept`` asks for (Prometheus or OpenMetrics).

    Returns the body and its content type.
    """
    registry = CollectorRegistry()
    registry.register(KpiCollector())
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type
