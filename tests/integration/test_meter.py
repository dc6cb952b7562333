"""The path to the controller is rate-limited by an OpenFlow meter."""
import subprocess
import time

from topologies import probes
from topologies.lab import Lab

from .conftest import NETWORKS


def test_packet_ins_are_rate_limited_by_a_meter():
    with Lab(f"{NETWORKS}/learning_flood.yaml") as lab:
        start = lab.status()["packet_ins"]
        t0 = time.time()
        probes.flood_macs(lab.host("hv1l20"), 5).wait(timeout=30)
        elapsed = time.time() - t0
        time.sleep(0.5)
        handled = lab.status()["packet_ins"] - start
        meter = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "meter-stats", "hv1"],
                               capture_output=True, text=True, check=True).stdout
        # The controller meter's block (meter 2 is DHCP snooping's): its
        # band's packet_count is what it dropped.
        block = meter.split("meter:1 ")[1].split("meter:")[0]
        band_dropped = int(block.split("packet_count:")[-1].split()[0])
        # Rate 50/s, burst 10 in the file: what reached the controller is bounded.
        assert 0 < handled <= 50 * (elapsed + 1) + 10, (handled, elapsed)
        assert band_dropped > 10 * handled, meter
        # The controller still answers and still forwards for declared VMs.
        assert lab.status()["ready"]
