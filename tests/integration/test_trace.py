"""The trace against the real thing (tests/networks/remote_mirror.yaml, a
mixed policy): for every ordered VM pair, GET /api/v1/trace says delivered
exactly when a real ping gets there, and names a copy to the IDS exactly
when the IDS really gets one."""
import json
import urllib.parse

import pytest

from tests import rest_client
from topologies import probes
from topologies.lab import CENTRAL_IDS, Lab

from .conftest import NETWORKS

POLICY = """policy:
  default: allow
  segments: {north: mirror}
  pairs:
    - {segments: [north, south], mode: allow}
    - {segments: [east, west], mode: mirror}
  vms: {w3: quarantine}
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with open(f"{NETWORKS}/remote_mirror.yaml") as f:
        text = f.read()
    path = tmp_path_factory.mktemp("trace") / "mixed.yaml"
    path.write_text(text[:text.index("policy:")] + POLICY)
    with Lab(str(path), core="rmcore") as running:
        running.pin_neighbours()
        yield running


def traced(lab, src: str, dst: str) -> dict:
    query = urllib.parse.urlencode({"src": src, "dst": dst})
    status, text = rest_client.request(lab.rest_url, "GET", f"/api/v1/trace?{query}")
    assert status == 200, text
    return json.loads(text)


def test_trace_agrees_with_real_pings_for_every_pair(lab):
    names = [vm.name for vm in lab.network.vms]
    real = probes.reachability({n: lab.host(n) for n in names},
                               {n: str(lab.network.vm(n).ip) for n in names})
    disagree = []
    for (src, dst), answered in sorted(real.items()):
        there, back = traced(lab, src, dst), traced(lab, dst, src)
        said = there["verdict"] == back["verdict"] == "delivered"
        if said != answered:
            disagree.append((src, dst, answered, there["explanation"], back["explanation"]))
    assert disagree == [], disagree
    assert any(real.values()) and not all(real.values()), "a mixed policy: some of each"


@pytest.mark.parametrize("src,dst", [("n1", "n2"), ("e2", "w3"), ("n1", "s1"),
                                     ("n3", "n1")])
def test_trace_names_a_copy_exactly_when_the_ids_gets_one(lab, src, dst):
    answer = traced(lab, src, dst)
    sensors = [CENTRAL_IDS, "rm3ids"]
    vm = lab.network.vm(src)
    caps = {s: probes.Capture(lab.host(s)).start() for s in sensors}
    probes.ping(lab.host(src), str(lab.network.vm(dst).ip), count=3)
    seen = 0
    for cap in caps.values():
        frames = cap.frames()
        cap.close()
        # Decapsulated or not, a copy carries the sender's MAC inside.
        seen += sum(bytes.fromhex(vm.mac.replace(":", "")) in f for f in frames)
    assert bool(answer["copies"]) == (seen > 0), (answer["copies"], seen)
