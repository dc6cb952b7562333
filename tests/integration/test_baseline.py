"""The probes can fail: on a flooding vSwitch they see what the controller stops."""
from topologies import probes
from topologies.lab import Lab

from .conftest import EXAMPLE


def test_hub_vswitch_leaks_neighbour_traffic_and_joins_segments():
    with Lab(EXAMPLE, controller=False, switch_mode="hub") as lab:
        web1, web3, app1 = lab.host("web1"), lab.host("web3"), lab.host("app1")
        attacker = lab.network.vm("web2")
        with probes.capture(lab.host("web2"),
                            f"not ether dst {attacker.mac} and not ether multicast") as cap:
            assert probes.ping(web1, web3.IP(), count=5)[1] == 5
        assert cap.count() >= 10          # requests and replies between web1 and web3
        cap.close()
        assert probes.reaches(web1, app1.IP()), "a hub does not separate segments"
