"""The subscriber's counters, as one frozen snapshot."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import final


@final
@dataclass(frozen=True, slots=True)
class InvalidationStats:
    """A snapshot of the subscriber's counters.

    ``received``: payloads handed to the dispatcher (valid or not); ``applied``: messages whose
    ``on_invalidate``/``evict`` returned; ``failures``: those that raised (a failed rebuild
    already evicted the entry); ``coalesced``: messages superseded by a newer one for the same
    agent before they ran (see the coalescing rule in ``_dispatch``); ``dropped``: payloads not
    applied, by ``DropReason`` value (``internal_error``: handling one raised, a bug);
    ``unknown_events``: valid messages with an unknown ``event`` (evicted);
    ``reconnects``: subscriptions established after a lost connection or a failed attempt;
    ``resyncs``: resyncs after those (a version check, or evicting everything);
    ``resync_evictions``: entries removed with cause ``resync`` (by resyncs and reconciliations).

    The version check (with a version source): ``version_checked`` agents compared,
    ``version_repaired`` of them found stale, deleted or unusable and repaired,
    ``version_unusable`` values that were not versions, ``version_source_failures`` source calls
    that raised, timed out or returned no mapping, ``version_source_abandoned`` of them timed
    out and were abandoned (still running, or ignoring their cancellation),
    ``reconciliations`` periodic checks completed. ``restarts``: the listener or the
    reconciler ended unexpectedly and was restarted (each one an ERROR in the log).

    Loss detection (messages with snak's ``outbox_id``, and a version source):
    ``gaps_detected`` outbox ids given up as lost after the gap tolerance,
    ``gap_reconciliations`` version checks run at once because of them (at most one per
    tolerance window), ``gap_resets`` jumps of the id too large to chase, which restarted
    tracking. ``malformed_outbox_ids`` / ``malformed_processed_at``: messages whose field was
    present but malformed (ignored; the invalidation applied all the same).

    Propagation lag (messages with ``processed_at``): ``lag_buckets`` applied messages per
    ``DURATION_BUCKETS_MS`` bound (+Inf last, not cumulative), ``lag_time_ms`` their sum;
    ``lag_clamped`` negative delays (clock skew between hosts) recorded as 0.
    """

    received: int = 0
    applied: int = 0
    failures: int = 0
    unknown_events: int = 0
    reconnects: int = 0
    resyncs: int = 0
    resync_evictions: int = 0
    version_checked: int = 0
    version_repaired: int = 0
    version_unusable: int = 0
    version_source_failures: int = 0
    version_source_abandoned: int = 0
    reconciliations: int = 0
    coalesced: int = 0
    restarts: int = 0
    gaps_detected: int = 0
    gap_reconciliations: int = 0
    gap_resets: int = 0
    malformed_outbox_ids: int = 0
    malformed_processed_at: int = 0
    lag_clamped: int = 0
    lag_buckets: tuple[int, ...] = ()
    lag_time_ms: float = 0.0
    connected: bool = False
    pending: int = 0
    dropped: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def lag_count(self) -> int:
        """Applied messages whose propagation lag was recorded."""
        return sum(self.lag_buckets)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())
