"""Firewall health: probes and port state decide, with time passed in."""
from controller.health import FirewallHealth


def test_a_firewall_is_unknown_and_down_until_its_first_probe_returns():
    h = FirewallHealth(interval=1.0, misses=3)
    h.watch("hv1")
    assert h.unknown("hv1") and h.down == {"hv1"}, "down from the start"
    assert h.evaluate(0.0) == (set(), set())
    h.probe_returned("hv1", now=0.2)
    assert not h.unknown("hv1")
    assert h.evaluate(0.3) == (set(), {"hv1"}) and h.down == set()


def test_silent_firewall_goes_down_after_its_misses_and_comes_back_on_a_probe():
    h = FirewallHealth(interval=1.0, misses=3)
    h.watch("hv1")
    h.probe_returned("hv1", now=0.0)
    assert h.evaluate(2.9) == (set(), {"hv1"})
    assert h.evaluate(3.1) == ({"hv1"}, set()) and h.down == {"hv1"}
    assert h.evaluate(4.0) == (set(), set())            # reported once
    assert not h.unknown("hv1"), "down, not unknown: it was measured"
    h.probe_returned("hv1", now=4.5)
    assert h.evaluate(4.6) == (set(), {"hv1"}) and h.down == set()


def test_port_down_is_down_at_once_whatever_the_probes_say():
    h = FirewallHealth(interval=1.0, misses=3)
    h.watch("hv1")
    h.probe_returned("hv1", 0.5)
    assert h.evaluate(0.55) == (set(), {"hv1"})
    h.port_changed("hv1", up=False)
    h.probe_returned("hv1", 0.58)
    assert h.evaluate(0.6) == ({"hv1"}, set())
    h.port_changed("hv1", up=True)
    assert h.evaluate(0.7) == (set(), {"hv1"})


def test_a_reconnecting_switch_starts_unknown_again():
    h = FirewallHealth(interval=1.0, misses=2)
    h.watch("hv1")
    h.probe_returned("hv1", 0.0)
    assert h.evaluate(0.1) == (set(), {"hv1"})
    h.forget("hv1")                      # disconnected: nothing is known any more
    h.probe_returned("hv1", 0.2)         # a late probe of the old connection
    h.watch("hv1")
    assert h.unknown("hv1") and h.down == {"hv1"}
