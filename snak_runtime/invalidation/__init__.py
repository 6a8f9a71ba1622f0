"""Fleet-wide invalidation over Redis pub/sub, wire-compatible with snak (the `redis` extra).

``redis`` is imported only when something connects: with no Redis variable set, importing this
package, building its settings or running the container's ``invalidation`` resource never
needs it. The modules, in the order a message travels:

- ``_settings``: the Redis variables and the endpoint they resolve to;
- ``_sentinel``: the Sentinel variables and their rules (pure), ``_sentinel_client``: the
  master's client through redis-py's Sentinel (imported only when Sentinel connects);
- ``_client``: the redis-py client (imported late, no hidden retries);
- ``_wire``: the message format and the reconnect backoff (pure functions);
- ``_dispatch``: the inbox (parse, count, log) and per-agent application, coalesced;
- ``_subscriber``: one connection's life: subscribe, resync, receive, backoff, stop;
- ``_pacing``: when the receive loop yields, and the liveness check;
- ``_supervise``: the listener and the reconciler restarted after an unexpected exit;
- ``_versions``: the version check behind resync and reconciliation (a user's version source);
- ``_gaps``: loss detection from gaps in snak's ``outbox_id`` (pure), ``_lag``: the propagation
  lag histogram, ``_loss``: their glue with the receive loop and the reconciler;
- ``_bounded``: awaiting user code with a bound that holds even if it ignores cancellation;
- ``_ratelog``: warnings about bad input, one line per reason per interval, never a payload;
- ``_publisher``: the sending side; ``_stats``: the subscriber's counters;
- ``_resource``: the container's resource.
"""

from ._dispatch import InvalidationTarget as InvalidationTarget
from ._publisher import InvalidationPublisher as InvalidationPublisher
from ._publisher import publish_invalidation as publish_invalidation
from ._resource import run_invalidation as run_invalidation
from ._sentinel import RedisConfigError as RedisConfigError
from ._sentinel import SentinelEndpoint as SentinelEndpoint
from ._settings import DEFAULT_CHANNEL as DEFAULT_CHANNEL
from ._settings import InvalidationSettings as InvalidationSettings
from ._settings import RedisEndpoint as RedisEndpoint
from ._stats import InvalidationStats as InvalidationStats
from ._subscriber import InvalidationSubscriber as InvalidationSubscriber
from ._versions import ResyncTarget as ResyncTarget
from ._versions import VersionSource as VersionSource
from ._wire import MAX_AGENT_ID_CHARS as MAX_AGENT_ID_CHARS
from ._wire import MAX_PAYLOAD_BYTES as MAX_PAYLOAD_BYTES
from ._wire import Action as Action
from ._wire import Dropped as Dropped
from ._wire import DropReason as DropReason
from ._wire import InvalidationMessage as InvalidationMessage
from ._wire import backoff_ms as backoff_ms
from ._wire import encode_message as encode_message
from ._wire import parse_message as parse_message

__all__ = (
    "DEFAULT_CHANNEL",
    "MAX_AGENT_ID_CHARS",
    "MAX_PAYLOAD_BYTES",
    "Action",
    "DropReason",
    "Dropped",
    "InvalidationMessage",
    "InvalidationPublisher",
    "InvalidationSettings",
    "InvalidationStats",
    "InvalidationSubscriber",
    "InvalidationTarget",
    "RedisConfigError",
    "RedisEndpoint",
    "ResyncTarget",
    "SentinelEndpoint",
    "VersionSource",
    "backoff_ms",
    "encode_message",
    "parse_message",
    "publish_invalidation",
    "run_invalidation",
)
