"""File states move out of the database into the state store (KPI_STATE_URL).

Before, each counted file's state was kept here as 4 MiB slices of bytes. Each
file's slices are joined, decoded and written to the store as one partitioned
Parquet state; the row left behind is a reference (key, size, pairs). A file
already moved (its row has a key) is skipped, so the step can be run again
after an interruption.
"""

from django.conf import settings
from django.db import migrations, models


def states_to_store(apps, schema_editor):
    from kpis.pipeline import Partial
    from kpis.pipeline.store import StateStore, state_key_prefix

    FileState = apps.get_model("kpis", "FileState")
    file_ids = (
        FileState.objects.filter(key="").values_list("file_id", flat=True).distinct().order_by()
    )
    store = StateStore(settings.KPI_STATE_URL)
    for file_id in list(file_ids):
        # One file at a time: memory follows the largest state, not the table.
        slices = FileState.objects.filter(file_id=file_id).order_by("seq")
        first = slices.select_related("file").first()
        data = b"".join(bytes(piece) for piece in slices.values_list("data", flat=True))
        partial = Partial.from_bytes(data)
        prefix = state_key_prefix(
            first.file.interval_start_timestamp, first.file.name, seq=0
        )
        ref = store.write(prefix, partial, partitions=settings.KPI_STATE_PARTITIONS)
        slices.delete()
        FileState.objects.create(
            file_id=file_id, seq=0, key=ref.key, size=ref.size, pairs=ref.pairs, data=b""
        )


class Migration(migrations.Migration):
    dependencies = [
        ("kpis", "0003_update_run"),
    ]

    operations = [
        migrations.AddField(
            model_name="filestate",
            name="key",
            field=models.CharField(default="", max_length=512),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="filestate",
            name="size",
            field=models.PositiveBigIntegerField(default=0, help_text="Bytes of the stored state."),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="filestate",
            name="pairs",
            field=models.PositiveBigIntegerField(
                default=0, help_text="Distinct (cell, subscriber) pairs in it."
            ),
            preserve_default=False,
        ),
        migrations.RunPython(states_to_store, migrations.RunPython.noop, elidable=False),
        migrations.RemoveField(model_name="filestate", name="data"),
        migrations.AlterField(
            model_name="filestate",
            name="key",
            field=models.CharField(max_length=512, unique=True),
        ),
    ]
