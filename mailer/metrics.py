"""/metrics in the Prometheus text format (SPEC §12), read from the store at scrape time.

prometheus_client's collectors are synchronous and the store is not: each scrape first reads
the store (`refresh`), then the registry's own collector hands out what was read. A registry
of our own, not the global one: nothing else in the process (or a second service in a test)
adds to it, and nothing of the library's process metrics shows up unasked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from mailer.delivery import Verdict
from mailer.store import Store

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


@dataclass(frozen=True)
class _Read:
    """What one scrape read from the store."""

    states: dict[str, int] = field(default_factory=dict)
    oldest_due_age_s: float = 0.0
    events_in_error: int = 0
    nodes_live: int = 0  # heard of within a lease (SPEC §9)
    planner: bool = False  # this node plans


class Metrics(Collector):
    """The figures of one running service: the store's, and its own attempts since start."""

    def __init__(
        self, store: Store, *, now: Callable[[], float], attempts: Mapping[str, int]
    ) -> None:
        self.store = store
        self.now = now
        self.attempts = attempts  # by verdict, since start (sending.Sender.attempts_made)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self._read = _Read()

    async def scrape(self) -> bytes:
        """Read the store now, and the exposition of it."""
        await self.refresh()
        return generate_latest(self.registry)

    async def refresh(self) -> None:
        states = {state.value: n for state, n in (await self.store.state_counts()).items()}
        events = await self.store.events()
        now = self.now()
        oldest = await self.store.oldest_due(now)
        me = self.store.node
        live = [n for n in await self.store.nodes() if n.last_seen >= now - me.lease_s]
        self._read = _Read(
            states=states,
            oldest_due_age_s=0.0 if oldest is None else max(now - oldest, 0.0),
            events_in_error=sum(1 for e in events.values() if e.error and not e.removed),
            nodes_live=len(live),
            planner=any(n.id == me.id and n.planner for n in live),
        )

    def collect(self) -> Iterator[Metric]:
        read = self._read
        deliveries = GaugeMetricFamily(
            "mailer_deliveries", "Deliveries in the store, by state.", labels=["state"]
        )
        for state, count in read.states.items():
            deliveries.add_metric([state], count)
        yield deliveries
        sent = self.attempts.get(Verdict.SENT.value, 0)
        yield CounterMetricFamily(
            "mailer_messages_sent", "Messages handed over since this process started.", sent
        )
        attempts = CounterMetricFamily(
            "mailer_attempts",
            "Attempts recorded since this process started, by verdict.",
            labels=["verdict"],
        )
        for verdict in Verdict:
            attempts.add_metric([verdict.value], self.attempts.get(verdict.value, 0))
        yield attempts
        yield GaugeMetricFamily(
            "mailer_oldest_due_age_seconds",
            "Age of the oldest delivery due and not yet sent; 0 if none.",
            read.oldest_due_age_s,
        )
        yield GaugeMetricFamily(
            "mailer_events_in_error",
            "Event files whose newest version is invalid (the last valid one stays in force).",
            read.events_in_error,
        )
        yield GaugeMetricFamily(
            "mailer_nodes_live",
            "Nodes on this database heard of within a lease, this one included.",
            read.nodes_live,
        )
        yield GaugeMetricFamily(
            "mailer_planner", "1 if this node plans (reads schedules/), else 0.", read.planner
        )
