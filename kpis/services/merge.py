"""Merging stored states on the executor: one task per group of cell partitions.

A cell lies in one partition only, so each task merges its partitions of all
the states and sends back only their top cells and (the first task) the
service totals; the ranking of the whole is made from those. Memory per task
follows its partitions, not the volume merged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING

from kpis.pipeline import key_id_for
from kpis.pipeline.executors import FileExecutor, WorkerLost
from kpis.services.config import UpdateConfig
from kpis.services.read import Heartbeat, wait_alive

if TYPE_CHECKING:
    from kpis.pipeline.tasks import MergedTops, Ranking

logger = logging.getLogger("kpis.update")


def states_ranking(
    keys: Sequence[str],
    *,
    config: UpdateConfig,
    executor: FileExecutor,
    heartbeat: Heartbeat,
    what: str,
) -> Ranking:
    """Merge the states under ``keys`` on the executor, a group of cell partitions per task."""
    from kpis.pipeline.tasks import Ranking, merge_plan, states_merge

    if not keys:
        return Ranking.of(())

    def submit() -> list[Future[MergedTops]]:
        return [
            executor.submit(
                states_merge,
                config.state_url,
                list(keys),
                parts=parts,
                partitions=config.partitions,
                top_n=config.top_n,
                key_id=key_id_for(config.hash_key),
                with_totals=index == 0,
            )
            for index, parts in enumerate(merge_plan(config.partitions, executor.workers))
        ]

    while True:
        try:
            futures = submit()
            wait_alive(futures, heartbeat)
            return Ranking.of(future.result() for future in futures)
        except executor.lost as error:
            if not executor.renewable:
                raise WorkerLost(
                    "a worker process died while reading or merging states "
                    f"({error or type(error).__name__}); nothing of {what} or later was "
                    "stored; the next run reads them again"
                ) from error
            logger.warning(
                "a worker process died while merging the states of %s; merging again in a "
                "new pool of %s",
                what,
                executor.description,
            )
            executor.renew()
