"""Fixtures for tests on real Open vSwitch + Mininet + the controller process."""
import os
import re
import subprocess

import pytest

from topologies.lab import Lab

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(REPO, "examples", "consolidated.yaml")
NETWORKS = os.path.join(REPO, "tests", "networks")
SAMPLE = re.compile(r"sample\([^)]*\),?")


def pytest_collection_modifyitems(items):
    here = os.path.dirname(os.path.abspath(__file__))
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.lab)


@pytest.fixture(scope="session", autouse=True)
def _root_and_ovs():
    # Not a skip: a machine that cannot run the lab fails the suite.
    assert os.geteuid() == 0, "integration tests need root (Mininet, OVS)"
    subprocess.run(["ovs-vsctl", "--timeout=5", "show"], check=True,
                   stdout=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def lab():
    """The bundled example under the controller, shared by a test module."""
    with Lab(EXAMPLE) as running:
        yield running


def dump_flows(bridge: str) -> list[str]:
    """The bridge's entries as ovs-ofctl prints them, with the IPFIX sample
    actions left out (an entry that only samples shows as actions=drop)."""
    out = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", bridge],
                         capture_output=True, text=True, check=True).stdout
    lines = [SAMPLE.sub("", line.strip()) for line in out.splitlines() if "cookie=" in line]
    return [line + "drop" if line.endswith("actions=") else line for line in lines]


def flow_packets(bridge: str, needle: str) -> int:
    """Packets counted by the entries whose text contains `needle`."""
    total = 0
    for line in dump_flows(bridge):
        if needle in line:
            total += int(line.split("n_packets=")[1].split(",")[0])
    return total


def example_variant(tmp_path, policy: str, name: str = "variant.yaml") -> str:
    """The bundled example with its policy section replaced; returns the path."""
    with open(EXAMPLE) as f:
        text = f.read()
    path = tmp_path / name
    path.write_text(text[:text.index("\npolicy:")] + "\npolicy:\n" + policy)
    return str(path)
