"""Firewall health: probes and port state decide, with time passed in."""
from controller.health import FirewallHealth


def test_silent_firewall_goes_down_after_its_misses_and_comes_back_on_a_probe():
    h = FirewallHealth(interval=1.0, misses=3)
    h.watch("hv1", now=0.0)
    assert h.evaluate(2.9) == (set(), set())
    assert h.evaluate(3.1) == ({"hv1"}, set()) and h.down == {"hv1"}
    assert h.evaluate(4.0) == (set(), set())            # reported once
    h.probe_returned("hv1", now=4.5)
    assert h.evaluate(4.6) == (set(), {"hv1"}) and h.down == set()


def test_port_down_is_down_at_once_whatever_the_probes_say():
    h = FirewallHealth(interval=1.0, misses=3)
    h.watch("hv1", 0.0)
    h.port_changed("hv1", up=False)
    h.probe_returned("hv1", 0.5)
    assert h.evaluate(0.6) == ({"hv1"}, set())
    h.port_changed("hv1", up=True)
    assert h.evaluate(0.7) == (set(), {"hv1"})


def test_restart_gives_every_firewall_a_fresh_grace_period():
    h = FirewallHealth(interval=1.0, misses=3)
    h.watch("hv1", 0.0)
    h.restart(100.0)                       # steering switched on long after connect
    assert h.evaluate(102.0) == (set(), set())
    assert h.evaluate(103.5) == ({"hv1"}, set())


def test_watching_again_keeps_the_last_probe_and_forget_clears():
    h = FirewallHealth(interval=1.0, misses=2)
    h.watch("hv1", 0.0)
    h.watch("hv1", 10.0)                  # reconnect: no fresh grace period
    assert h.evaluate(10.0) == ({"hv1"}, set())
    h.forget("hv1")
    assert h.evaluate(11.0) == (set(), {"hv1"})
