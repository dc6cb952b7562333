"""Prometheus metrics for GET /metrics (Ryu glue, a registry of our own).

Most values are read from the app when Prometheus scrapes, so they are as
fresh as the app's own state (flow counters: the last 2 s poll). Flow
counters restart from zero when a policy change replaces an entry;
Prometheus treats that as a counter reset.
"""
from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from controller import traffic


CONTENT_TYPE = CONTENT_TYPE_LATEST
# Two-phase commits confirmed by barriers: tens of milliseconds on a LAN,
# up to the 5 s confirmation timeout when a switch does not answer.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self, app):
        self.app = app
        self.registry = CollectorRegistry()
        self.policy_change_seconds = Histogram(
            "vguard_policy_change_seconds",
            "Time from a policy change request to its confirmed commit on every switch",
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.policy_changes = Counter(
            "vguard_policy_changes", "Policy change requests by outcome",
            ["outcome"], registry=self.registry)
        self.registry.register(_AppCollector(app))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _AppCollector:
    def __init__(self, app):
        self.app = app

    def describe(self):
        return []        # values only exist at scrape time

    def collect(self):
        app = self.app
        connected = GaugeMetricFamily("vguard_hypervisor_connected",
                                      "1 if the hypervisor's bridge is connected",
                                      labels=["hypervisor"])
        synced = GaugeMetricFamily("vguard_hypervisor_synced",
                                   "1 if the bridge holds exactly the intended flows",
                                   labels=["hypervisor"])
        flows = GaugeMetricFamily("vguard_flows", "Flow entries the controller keeps "
                                  "on the hypervisor's bridge", labels=["hypervisor"])
        for hv in app.fabric.network.hypervisors:
            state = app.fabric.switches.get(hv.name)
            connected.add_metric([hv.name], int(state is not None))
            synced.add_metric([hv.name], int(bool(state and state.synced)))
            if state is not None:
                flows.add_metric([hv.name], len(state.desired))
        yield connected
        yield synced
        yield flows
        refused = CounterMetricFamily("vguard_refused_connections", "OpenFlow connections "
                                      "refused: a second one claiming a connected "
                                      "hypervisor, or from outside its connect_from",
                                      labels=["hypervisor"])
        for name, count in sorted(app.fabric.refused_connections.items()):
            refused.add_metric([name], count)
        yield refused
        yield GaugeMetricFamily("vguard_hypervisors_connected",
                                "Hypervisors connected", value=len(app.fabric.switches))
        yield CounterMetricFamily("vguard_packet_ins", "Packet-ins handled "
                                  "(learning ports)", value=app.fabric.packet_ins)
        counts = app.fabric.counters()
        mirrored = {kind: CounterMetricFamily(f"vguard_mirrored_{kind}",
                                              f"Frames copied to the IDS ({kind})",
                                              labels=["hypervisor"])
                    for kind in ("packets", "bytes")}
        dropped = {kind: CounterMetricFamily(f"vguard_dropped_{kind}",
                                             f"Frames dropped, by rule reason ({kind})",
                                             labels=["hypervisor", "reason"])
                   for kind in ("packets", "bytes")}
        for name, doc in counts["hypervisors"].items():
            for kind in ("packets", "bytes"):
                mirrored[kind].add_metric([name], doc["mirrored"][kind])
                for reason, total in sorted(doc["dropped"].items()):
                    dropped[kind].add_metric([name, reason], total[kind])
        yield from mirrored.values()
        yield from dropped.values()
        yield from _segment_pairs(app.fabric)
        yield from _alerts(app)


def _alerts(app):
    """IDS alerts by what they did (acted, extended, capped, allowlisted,
    unowned; ignored: records that were not usable alerts)."""
    decided = CounterMetricFamily("vguard_alert_decisions", "What IDS alerts did to "
                                  "the VMs they name, by kind", labels=["kind"])
    for kind, count in sorted(app.fabric.response.counts.items()):
        decided.add_metric([kind], count)
    yield decided
    yield CounterMetricFamily("vguard_alert_records_ignored", "EVE records taken in that "
                              "were not usable alerts", value=app.alerts.bad)
    active = GaugeMetricFamily("vguard_automatic_actions", "IDS actions in force, by "
                               "kind", labels=["action"])
    in_force = [a.action for a in app.fabric.response.responder.active()]
    for kind in ("quarantine", "mirror"):
        active.add_metric([kind], in_force.count(kind))
    yield active


def _segment_pairs(fabric):
    """Traffic by (source segment, destination segment, outcome): labels
    are segments, "external" or "-", never VMs (controller/traffic.py)."""
    net = fabric.network
    totals = traffic.segment_pairs(fabric.placed_network, [
        (net.hypervisor(n), s.desired, s.counters) for n, s in sorted(fabric.switches.items())])
    labels = ["src_segment", "dst_segment", "outcome"]
    families = {kind: CounterMetricFamily(f"vguard_segment_pair_{kind}",
                                          f"Frames by segment pair and outcome ({kind})",
                                          labels=labels)
                for kind in ("packets", "bytes")}
    for key, (packets, octets) in sorted(totals.items()):
        families["packets"].add_metric(list(key), packets)
        families["bytes"].add_metric(list(key), octets)
    yield from families.values()
