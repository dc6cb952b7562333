"""The lab's switches export IPFIX samples to the controller's collector:
the same OVSDB rows the README's ovs-vsctl line makes on a real hypervisor.

A Flow_Sample_Collector_Set row outlives its bridge (OVS keeps it, with a
dangling reference), so each row is marked with its bridge's name and
removed by the lab that made it, or by the sweep after a crashed one.
"""
from __future__ import annotations

import json
import subprocess

from controller import model

MARK = "vguard-lab-bridge"
# Samples of one flow are aggregated by the switch for this many seconds
# (at most this many flows at a time) before they are exported.
CACHE_ACTIVE_TIMEOUT = 1
CACHE_MAX_FLOWS = 4096


def _vsctl(*args: str) -> str:
    return subprocess.run(["ovs-vsctl", "--timeout=10", *args], check=True,
                          capture_output=True, text=True).stdout.strip()


def configure(network: model.Network, collector: str) -> list[str]:
    """Every hypervisor bridge sends to `collector` (HOST:PORT); the rows'
    uuids, for remove()."""
    made = []
    for hv in network.hypervisors:
        out = _vsctl("--", "--id=@br", "get", "Bridge", hv.name,
                     "--", "--id=@i", "create", "IPFIX", f'targets="{collector}"',
                     f"cache_active_timeout={CACHE_ACTIVE_TIMEOUT}",
                     f"cache_max_flows={CACHE_MAX_FLOWS}",
                     "--", "create", "Flow_Sample_Collector_Set",
                     f"id={network.flow_records.collector_set}", "bridge=@br", "ipfix=@i",
                     f"external_ids:{MARK}={hv.name}")
        made.append(out.split()[-1])       # the collector set's (the IPFIX row's is first)
    return made


def remove(uuids) -> None:
    """The rows configure() made (their IPFIX rows go with them)."""
    for uuid in uuids:
        subprocess.run(["ovs-vsctl", "--timeout=10", "--if-exists", "destroy",
                        "Flow_Sample_Collector_Set", uuid], capture_output=True)


def leftovers(bridges) -> list[str]:
    """Rows a crashed lab left for these bridge names."""
    out = _vsctl("--columns=_uuid,external_ids", "--format=json", "list",
                 "Flow_Sample_Collector_Set")
    rows = json.loads(out)["data"] if out else []
    found = []
    for uuid, ids in rows:
        marks = dict(ids[1]) if ids and ids[0] == "map" else {}
        if marks.get(MARK) in bridges:
            found.append(uuid[1])
    return found
