"""Every write of the service, by concern.

- :mod:`kpis.services.update`: one ``update_network_stats`` run, step by step:
  :mod:`~kpis.services.config` (what a run is told), :mod:`~kpis.services.plan` (which files),
  :mod:`~kpis.services.read` (reading and merging on the executor),
  :mod:`~kpis.services.persist` (an interval or an hour in one transaction),
  :mod:`~kpis.services.summary` (what a run reports).
- :mod:`kpis.services.state`: references to each counted file's states in the state store.
- :mod:`kpis.services.locks`: the lease that lets one run work at a time.
- :mod:`kpis.services.retention`: dropping the file states of final hours, pruning old rows.
- :mod:`kpis.services.restatement`: the restatement window, too-late files, restating hours.
- :mod:`kpis.services.folder`: the input folder listed cheaply, for comparing with the ledger.
- :mod:`kpis.services.tokens`: API tokens.
- :mod:`kpis.services.runs`: the run history (each update run records how it ended).
"""

from __future__ import annotations

from kpis.services.config import UpdateConfig
from kpis.services.locks import (
    UPDATE_LOCK_NAME,
    LockBusy,
    run_lock,
    run_lock_acquire,
    run_lock_heartbeat,
    run_lock_release,
)
from kpis.services.persist import hour_roll_up, interval_persist
from kpis.services.retention import final_hour_states_drop, hour_states_drop, kpi_rows_prune
from kpis.services.runs import (
    RUNS_KEPT_AT_LEAST,
    RunRecording,
    update_run_record,
    update_run_recorded,
    update_runs_prune,
)
from kpis.services.state import orphan_states_sweep, state_store
from kpis.services.summary import IntervalResult, Observer, RunSummary
from kpis.services.tokens import api_token_create, api_token_revoke, api_user_create
from kpis.services.update import network_stats_update

__all__ = [
    "RUNS_KEPT_AT_LEAST",
    "UPDATE_LOCK_NAME",
    "IntervalResult",
    "LockBusy",
    "Observer",
    "RunRecording",
    "RunSummary",
    "UpdateConfig",
    "api_token_create",
    "api_token_revoke",
    "api_user_create",
    "final_hour_states_drop",
    "hour_roll_up",
    "hour_states_drop",
    "interval_persist",
    "kpi_rows_prune",
    "network_stats_update",
    "orphan_states_sweep",
    "run_lock",
    "run_lock_acquire",
    "run_lock_heartbeat",
    "run_lock_release",
    "state_store",
    "update_run_record",
    "update_run_recorded",
    "update_runs_prune",
]
