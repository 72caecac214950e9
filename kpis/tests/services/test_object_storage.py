"""The folder contract against an S3 bucket (SeaweedFS started by the suite).

The classes below are the folder tests themselves, run again with
``input_backend`` set to ``bucket``: each run reads an ``s3://`` prefix that
mirrors the test's folder. Same files, same KPIs, same ledger.
"""

from __future__ import annotations

import io
import socket
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from kpis.models import (
    CellUniqueUsers,
    FileState,
    InputFileRecord,
    IntervalLedger,
    ServiceTrafficVolume,
)
from kpis.pipeline import location, reader
from kpis.sampledata import Population, file_name, write_sample_files
from kpis.services import update
from kpis.tests.conftest import InputFolder, RunResult, utc
from kpis.tests.faults import database_clear
from kpis.tests.seaweed import SECRET_KEY, BucketMirror
from kpis.tests.services import test_restatement, test_services
from kpis.tests.services.test_restatement import processed

pytestmark = pytest.mark.django_db

__all__ = ["processed"]  # the restatement tests' fixture, used here too

Run = Callable[..., RunResult]


@pytest.fixture
def input_backend() -> str:
    return "bucket"


class TestSchedulingFromABucket(test_services.TestScheduling):
    pass


class TestLateAndChangedFilesFromABucket(test_services.TestLateAndChangedFiles):
    def test_a_touched_but_unchanged_file_is_not_recomputed(self) -> None:  # type: ignore[override]
        pytest.skip("an object has no mtime to touch; a re-upload of the same bytes is below")

    def test_the_same_bytes_uploaded_again_are_not_read_again(
        self, input_folder: InputFolder, run_update: Run, input_bucket: BucketMirror
    ) -> None:
        path = input_folder.write("2021-07-18T00:00", [("a", 1, 1, 10, 0)])
        assert run_update("2021-07-18T00:10Z").exit_code == 0
        input_bucket.filesystem.pipe(input_bucket.key(path.name), path.read_bytes())

        result = run_update("2021-07-18T00:10Z")

        assert "intervals processed: 0" in result.stdout
        record = InputFileRecord.objects.get(name=path.name)
        assert record.interval_revision == 1


class TestBadInputFromABucket(test_services.TestBadInput):
    pass


class TestDryRunAndRangesFromABucket(test_services.TestDryRunAndRanges):
    pass


class TestRestatementFromABucket(test_restatement.TestRestatement):
    pass


class TestTooLateFromABucket(test_restatement.TestTooLate):
    def test_a_new_file_for_a_final_hour_is_recorded_counted_nowhere_and_fails_the_run(  # type: ignore[override]
        self,
    ) -> None:
        pytest.skip("names the folder in its restatement command; the bucket's is tested below")

    def test_the_restatement_command_names_the_bucket(
        self, processed: InputFolder, run_update: Run, input_bucket: BucketMirror
    ) -> None:
        assert run_update(test_restatement.LATER).exit_code == 0
        processed.write("2021-07-18T00:10", test_restatement.rows_for(500), part=7)

        result = run_update(test_restatement.LATER)

        assert result.exit_code == 1
        assert f"--input-dir {input_bucket.url}" in result.stderr


def _nothing_written() -> bool:
    return not (
        InputFileRecord.objects.exists()
        or IntervalLedger.objects.exists()
        or ServiceTrafficVolume.objects.exists()
        or CellUniqueUsers.objects.exists()
    )


class TestFaults:
    def test_an_unreachable_endpoint_is_one_line_naming_the_variable_and_writes_nothing(
        self,
        input_folder: InputFolder,
        run_update: Run,
        input_bucket: BucketMirror,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        input_folder.write("2021-07-18T00:00", [("a", 1, 1, 10, 0)])
        input_bucket.sync()
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")

        result = run_update("2021-07-18T01:00Z")

        assert result.exit_code == 1
        assert len(result.stderr.strip().splitlines()) == 1
        assert "AWS_ENDPOINT_URL" in result.stderr
        assert _nothing_written()

    def test_an_unreachable_state_store_is_one_line_naming_it_and_writes_nothing(
        self,
        input_folder: InputFolder,
        input_bucket: BucketMirror,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """The input in a local folder, the states in a bucket whose endpoint is down."""
        input_folder.write("2021-07-18T00:00", [("a", 1, 1, 10, 0)])
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
        err = io.StringIO()

        with pytest.raises(CommandError) as failure:
            call_command(
                "update_network_stats",
                *("--now", "2021-07-18T01:00Z", "--input-dir", str(input_folder.path)),
                *("--workers", "1", "--no-progress"),
                stdout=io.StringIO(),
                stderr=err,
            )

        message = str(failure.value)
        assert len(message.splitlines()) == 1
        assert "AWS_ENDPOINT_URL" in message
        assert f"KPI_STATE_URL={input_bucket.state_url.rstrip('/')}" in message
        assert _nothing_written()

    def test_wrong_credentials_name_neither_the_secret_nor_its_value(
        self,
        input_folder: InputFolder,
        run_update: Run,
        input_bucket: BucketMirror,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        input_folder.write("2021-07-18T00:00", [("a", 1, 1, 10, 0)])
        input_bucket.sync()
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "a-wrong-secret-value")

        result = run_update("2021-07-18T01:00Z")

        assert result.exit_code == 1
        assert "credentials" in result.stderr
        assert "a-wrong-secret-value" not in result.stderr
        assert SECRET_KEY not in result.stderr
        assert _nothing_written()

    def test_an_object_deleted_between_listing_and_reading_is_a_vanished_file(
        self,
        input_folder: InputFolder,
        run_update: Run,
        input_bucket: BucketMirror,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        kept = input_folder.write("2021-07-18T00:00", [("a", 1, 1, 10, 0)])
        gone = input_folder.write("2021-07-18T00:00", [("b", 1, 2, 1, 0)], part=1)
        input_bucket.sync()
        listed = update.folder_list

        def list_then_delete(directory: object) -> object:
            listing = listed(directory)  # type: ignore[arg-type]
            input_bucket.filesystem.rm(input_bucket.key(gone.name))
            return listing

        monkeypatch.setattr(update, "folder_list", list_then_delete)
        # The mirror must not upload it again: it is gone from the folder too.
        gone.unlink()
        input_bucket.forget(gone.name)

        result = run_update("2021-07-18T01:00Z", "--workers", "1")

        assert result.exit_code == 0, result.stderr
        assert InputFileRecord.objects.filter(name=kept.name).exists()
        assert not InputFileRecord.objects.filter(name=gone.name).exists()
        assert test_services.services(1, "2021-07-18T00:00") == [(1, 10)]

    def test_the_endpoint_lost_mid_run_leaves_no_half_interval_and_the_next_run_completes(
        self,
        input_folder: InputFolder,
        run_update: Run,
        input_bucket: BucketMirror,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        for minute in ("00", "05", "10", "15"):
            for part in range(2):
                input_folder.write(
                    f"2021-07-18T00:{minute}",
                    test_restatement.rows_for(int(minute) + part),
                    part=part,
                )
        input_bucket.sync()
        endpoint = input_bucket.filesystem.client_kwargs["endpoint_url"]
        opened = location.open_input
        calls = {"count": 0}

        def open_then_lose_the_endpoint(path: location.InputPath) -> object:
            calls["count"] += 1
            if calls["count"] == 4:  # the second file of the second interval
                monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
            return opened(path)

        monkeypatch.setattr(reader, "open_input", open_then_lose_the_endpoint)

        broken = run_update("2021-07-18T01:00Z", "--workers", "1")

        assert broken.exit_code == 1
        assert "AWS_ENDPOINT_URL" in broken.stderr
        assert "2021-07-18T00:05" not in {
            f"{start:%Y-%m-%dT%H:%M}"
            for start in IntervalLedger.objects.values_list("interval_start_timestamp", flat=True)
        }
        monkeypatch.setattr(reader, "open_input", opened)
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)

        assert run_update("2021-07-18T01:00Z", "--workers", "1").exit_code == 0
        recovered = test_services.snapshot()
        for model in (CellUniqueUsers, ServiceTrafficVolume, IntervalLedger, InputFileRecord):
            model.objects.all().delete()
        FileState.objects.all().delete()
        assert run_update("2021-07-18T01:00Z", "--workers", "1").exit_code == 0
        assert test_services.snapshot() == recovered


def _closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RequestCounter:
    """The S3 operations an s3fs filesystem sends, by name (ListObjectsV2, GetObject, ...)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def attach(self, filesystem: Any) -> None:
        filesystem.connect()
        filesystem.s3.meta.events.register("before-call.s3", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        self.calls[model.name] += 1


@pytest.mark.slow
def test_a_run_over_an_unchanged_bucket_lists_once_and_reads_nothing(
    input_folder: InputFolder, run_update: Run, input_bucket: BucketMirror
) -> None:
    # More than one listing page (1,000 keys each), every object already processed.
    objects = {
        input_bucket.key(file_name(interval_start=utc("2021-07-18T00:00"), part=part)): (
            b"msisdn,cell_id,service_id,bytes_uplink,bytes_downlink\n%d,1,1,1,1\n" % part
        )
        for part in range(1_100)
    }
    input_bucket.filesystem.pipe(objects)
    assert run_update("2021-07-18T01:00Z", "--workers", "1").exit_code == 0
    counter = RequestCounter()
    counter.attach(location.s3_filesystem())

    result = run_update("2021-07-18T01:00Z", "--workers", "1")

    assert "intervals processed: 0" in result.stdout
    assert counter.calls == Counter({"ListObjectsV2": 2})


@pytest.fixture
def bucket_dask_cluster(input_bucket: BucketMirror) -> Iterator[str]:
    """Two Dask worker processes started with the AWS variables set, as on real machines."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2,
        processes=True,
        threads_per_worker=1,
        host="127.0.0.1",
        scheduler_port=0,
        dashboard_address="127.0.0.1:0",
    ) as cluster:
        yield cluster.scheduler_address


@pytest.mark.slow
def test_dask_workers_read_the_bucket_themselves_with_the_same_results(
    input_folder: InputFolder,
    run_update: Run,
    input_bucket: BucketMirror,
    bucket_dask_cluster: str,
    settings: Any,
) -> None:
    write_sample_files(
        input_folder.path,
        start=utc("2021-07-18T00:00"),
        intervals=4,
        parts=2,
        rows=200,
        population=Population(subscribers=60, cells=8, services=6, seed=3),
    )
    assert run_update("2021-07-18T01:10Z", "--workers", "1").exit_code == 0
    in_process = test_services.snapshot()
    database_clear()
    settings.KPI_DASK_SCHEDULER = bucket_dask_cluster

    on_dask = run_update("2021-07-18T01:10Z")

    assert on_dask.exit_code == 0, on_dask.stderr
    assert test_services.snapshot() == in_process


def test_kpi_input_dir_names_the_bucket_for_the_command(
    input_folder: InputFolder, input_bucket: BucketMirror, settings: Any
) -> None:
    from django.conf import settings as django_settings

    from kpis.pipeline.location import parse_input_location

    input_folder.write("2021-07-18T00:00", [("a", 1, 1, 10, 0)])
    input_bucket.sync()
    settings.KPI_INPUT_DIR = parse_input_location(input_bucket.url)
    assert input_bucket.url == django_settings.KPI_INPUT_DIR

    call_command("update_network_stats", "--now", "2021-07-18T01:00Z", "--no-progress")

    assert test_services.services(1, "2021-07-18T00:00") == [(1, 10)]


def test_an_empty_prefix_is_an_empty_folder_and_a_missing_bucket_is_named(
    input_folder: InputFolder, run_update: Run, input_bucket: BucketMirror
) -> None:
    assert run_update("2021-07-18T01:00Z").exit_code == 0

    out = io.StringIO()
    with pytest.raises(CommandError, match="KPI_INPUT_DIR: the bucket of s3://no-such-bucket/"):
        call_command(
            "update_network_stats",
            "--now",
            "2021-07-18T01:00Z",
            "--input-dir",
            "s3://no-such-bucket/input/",
            stdout=out,
        )
