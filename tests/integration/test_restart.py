"""Secure fail mode, a controller restart without loss, and reconciliation."""
import re
import subprocess
import time

from topologies import probes
from topologies.lab import Lab

from .conftest import EXAMPLE, dump_flows


def _ovs(*args):
    return subprocess.run(list(args), capture_output=True, text=True, check=True).stdout


def test_restart_loses_nothing_and_isolation_holds_while_down():
    with Lab(EXAMPLE) as lab:
        for hv in lab.network.hypervisors:
            assert _ovs("ovs-vsctl", "get-fail-mode", hv.name).strip() == "secure"
        web1, web3, app1 = lab.host("web1"), lab.host("web3"), lab.host("app1")
        assert probes.reaches(web1, web3.IP())
        ping = web1.popen(["ping", "-n", "-c", "120", "-i", "0.05", "-W", "1", web3.IP()],
                          stdout=subprocess.PIPE, text=True)
        time.sleep(1)
        lab.stop_controller()
        # Controller gone: forwarding and isolation both stay as programmed.
        assert not probes.reaches(web1, app1.IP())
        with probes.capture(lab.host("web2"), "icmp") as cap:
            time.sleep(1)
        assert cap.count() == 0
        cap.close()
        log_mark = _log_size(lab)
        lab.start_controller()
        out = ping.communicate(timeout=30)[0]
        sent, received = map(int, re.search(r"(\d+) packets transmitted, (\d+) received",
                                            out).groups())
        assert sent == 120 and received == 120, out[-300:]
        # Reconnecting with unchanged intent changes nothing on the switches.
        new_log = _log_tail(lab, log_mark)
        # (Look until both are in sync: the learning-port host may be learned
        # later, from its own IPv6 chatter, which is a change of its own.)
        synced = max(new_log.index("hv1: in sync"), new_log.index("hv2: in sync"))
        assert "committing" not in new_log[:synced], new_log


def test_reconnect_reconciles_by_cookie_without_flushing():
    with Lab(EXAMPLE) as lab:
        lab.stop_controller()
        flows = dump_flows("hv2")
        deliver_web3 = next(f for f in flows if "dl_dst=02:00:00:00:10:03" in f
                            and "table=3" in f)
        missing_cookie = re.search(r"cookie=(0x[0-9a-f]+)", deliver_web3).group(1)
        _ovs("ovs-ofctl", "-O", "OpenFlow13", "del-flows", "hv2",
             f"cookie={missing_cookie}/-1")
        stale = "0x5ec0010000000042"
        _ovs("ovs-ofctl", "-O", "OpenFlow13", "add-flow", "hv2",
             f"cookie={stale},table=3,priority=5,dl_dst=02:00:00:00:99:99,actions=drop")
        foreign = "0x1234"
        _ovs("ovs-ofctl", "-O", "OpenFlow13", "add-flow", "hv2",
             f"cookie={foreign},table=3,priority=4,dl_dst=02:00:00:00:99:98,actions=drop")
        assert not probes.reaches(lab.host("web1"), lab.host("web3").IP())
        time.sleep(1.5)       # so an entry re-added on reconnect shows a fresh duration
        log_mark = _log_size(lab)
        lab.start_controller()
        after = dump_flows("hv2")
        cookies = [re.search(r"cookie=(0x[0-9a-f]+)", f).group(1) for f in after]
        assert missing_cookie in cookies
        assert stale not in cookies
        assert foreign in cookies, "flows the controller does not own are left alone"
        # Nothing was flushed: every entry but the re-added one kept its age.
        # (The learning-port host may be learned meanwhile from its own IPv6
        # chatter: its entries are new for a reason of their own.)
        learner = lab.host("hv2l20").MAC()
        young = [f for f in after if float(re.search(r"duration=([\d.]+)s", f).group(1)) < 1.5
                 and learner not in f]
        assert [re.search(r"cookie=(0x[0-9a-f]+)", f).group(1) for f in young] \
            == [missing_cookie], young
        assert "hv2: committing 1 deletions and 1 additions" in _log_tail(lab, log_mark)
        assert probes.reaches(lab.host("web1"), lab.host("web3").IP())


def _log_size(lab) -> int:
    with open(lab.controller_log, "rb") as f:
        return len(f.read())


def _log_tail(lab, offset: int) -> str:
    with open(lab.controller_log, "rb") as f:
        return f.read()[offset:].decode(errors="replace")
