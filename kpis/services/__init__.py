"""Every write of the service, by concern.

- :mod:`kpis.services.update`: one ``update_network_stats`` run (intervals, hours).
- :mod:`kpis.services.state`: the stored state of each counted file.
- :mod:`kpis.services.locks`: the lease that lets one run work at a time.
- :mod:`kpis.services.retention`: dropping the file states of final hours, pruning old rows.
- :mod:`kpis.services.restatement`: the restatement window, too-late files, restating hours.
- :mod:`kpis.services.folder`: the input folder listed cheaply, for comparing with the ledger.
- :mod:`kpis.services.tokens`: API tokens.
- :mod:`kpis.services.runs`: the run history (each update run records how it ended).
"""

from __future__ import annotations

from kpis.services.locks import (
    UPDATE_LOCK_NAME,
    LockBusy,
    run_lock,
    run_lock_acquire,
    run_lock_heartbeat,
    run_lock_release,
)
from kpis.services.retention import final_hour_states_drop, hour_states_drop, kpi_rows_prune
from kpis.services.runs import (
    RUNS_KEPT_AT_LEAST,
    RunRecording,
    update_run_record,
    update_run_recorded,
    update_runs_prune,
)
from kpis.services.state import STATE_SLICE_BYTES, file_state_load, file_state_save
from kpis.services.tokens import api_token_create, api_token_revoke, api_user_create
from kpis.services.update import (
    IntervalResult,
    Observer,
    RunSummary,
    UpdateConfig,
    hour_roll_up,
    interval_persist,
    network_stats_update,
)

__all__ = [
    "RUNS_KEPT_AT_LEAST",
    "STATE_SLICE_BYTES",
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
    "file_state_load",
    "file_state_save",
    "final_hour_states_drop",
    "hour_roll_up",
    "hour_states_drop",
    "interval_persist",
    "kpi_rows_prune",
    "network_stats_update",
    "run_lock",
    "run_lock_acquire",
    "run_lock_heartbeat",
    "run_lock_release",
    "update_run_record",
    "update_run_recorded",
    "update_runs_prune",
]
