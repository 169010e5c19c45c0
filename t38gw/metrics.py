"""Prometheus metrics of one gateway (its own registry, so tests and instances don't mix)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

CONTENT_TYPE = CONTENT_TYPE_LATEST


class GatewayMetrics:
    def __init__(self, spool_depth: Callable[[], float] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # Worker 0 of several (t38gw.workers): the other workers' expositions, added in.
        self.merge_with: Callable[[], list[str]] | None = None
        r = self.registry
        self.active_calls = Gauge("t38gw_active_calls", "Calls in progress", registry=r)
        self.calls = Counter("t38gw_calls", "Finished calls by result", ["result"], registry=r)
        self.calls_by_media = Counter("t38gw_calls_by_media", "Finished faxes by how they were carried: t38, g711u, g711a",
                                      ["media"], registry=r)
        self.pages = Counter("t38gw_pages", "Pages confirmed", ["direction"], registry=r)
        self.udptl_received = Counter("t38gw_udptl_packets_received", "UDPTL datagrams received", registry=r)
        self.udptl_lost = Counter("t38gw_udptl_packets_lost", "IFPs lost beyond recovery", registry=r)
        self.udptl_recovered = Counter("t38gw_udptl_packets_recovered", "IFPs recovered", ["method"], registry=r)
        self.webhook_deliveries = Counter("t38gw_webhook_deliveries", "Webhook delivery attempts by result",
                                          ["result"], registry=r)
        self.t30_duration = Histogram("t38gw_t30_call_seconds", "T.30 duration of a call, phase A to E",
                                      ["result"], registry=r,
                                      buckets=(10, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1200, 3600))
        self.udptl_foreign = Counter("t38gw_udptl_foreign_datagrams",
                                     "Datagrams to a call's UDPTL port from a source other than its peer (dropped)",
                                     registry=r)
        self.sip_refused = Counter("t38gw_sip_refused", "SIP requests refused or dropped before any call",
                                   ["reason"], registry=r)
        self.spool_depth = Gauge("t38gw_webhook_spool_depth", "Webhook deliveries waiting in the spool",
                                 registry=r)
        if spool_depth is not None:
            self.spool_depth.set_function(spool_depth)
        # Issue 14: overload made visible (and what admission judges by, t38gw.overload).
        self.event_loop_lag = Gauge("t38gw_event_loop_lag_seconds",
                                    "The worst lateness of the event loop over the last 2 s", registry=r)
        self.cpu_ratio = Gauge("t38gw_process_cpu_ratio", "The process's CPU over the last 2 s, in cores",
                               registry=r)
        self.overloaded = Gauge("t38gw_overloaded", "1 while new calls are refused (503) for load", registry=r)
        # T.30 turn-around: from the end of the peer's frame (its FCS) to our first datagram
        # after it.  T.30 5.3.2 wants responses within 3 s +- 15 %; T.38 gateways on the
        # far side count on far less, and a loaded event loop shows here first.
        self.t30_response = Histogram("t38gw_t30_response_seconds",
                                      "From the end of the peer's T.30 transmission to our next datagram",
                                      registry=r, buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 1, 2, 3, 5))
        self.udptl_ports_in_use = Gauge("t38gw_udptl_ports_in_use", "UDPTL/RTP ports bound by calls", registry=r)
        # Our MCF leaves only once its page is on disk (t38gw.session): how long a response
        # waited for that.  The sender gives us T4 (3 s) before repeating its command.
        self.page_write_wait = Histogram("t38gw_page_write_wait_seconds",
                                         "How long a response confirming pages waited for them to be on disk",
                                         registry=r, buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 2.5, 3, 5, 10))

    def count_udp_receive_errors(self, read: Callable[[], dict[str, int]]) -> None:
        """Expose ``t38gw_udp_receive_errors_total{counter}``: the kernel's UDP receive
        errors since the gateway started (``read`` gives the counters; host-wide)."""
        self.registry.register(_KernelUdpErrors(read))

    def exposition(self) -> bytes:
        own = generate_latest(self.registry)
        if self.merge_with is None:
            return own
        from t38gw.workers import merge_expositions

        return merge_expositions(own, self.merge_with())


class _KernelUdpErrors(Collector):
    def __init__(self, read: Callable[[], dict[str, int]]) -> None:
        self._read = read
        self._base = read()

    def collect(self):  # type: ignore[no-untyped-def]
        family = CounterMetricFamily(
            "t38gw_udp_receive_errors",
            "UDP datagrams the kernel dropped on receive since the gateway started (/proc/net/snmp Udp "
            "InErrors, RcvbufErrors: host-wide)", labels=["counter"])
        for name, value in self._read().items():
            family.add_metric([name], max(0, value - self._base.get(name, 0)))
        yield family
