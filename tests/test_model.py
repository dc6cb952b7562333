"""Network-file validation: good files load, bad ones say file, place and problem."""
from __future__ import annotations

import copy
import ipaddress
from pathlib import Path

import pytest
import yaml

from controller import model
from controller.model import NetworkFileError

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "consolidated.yaml"


@pytest.fixture(scope="module")
def example_doc() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def load_doc(tmp_path: Path, doc) -> model.Network:
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return model.load(str(path))


def load_text(tmp_path: Path, text: str) -> model.Network:
    path = tmp_path / "lab.yaml"
    path.write_text(text)
    return model.load(str(path))


def assert_error(exc_info, tmp_path: Path, place: str, *words: str) -> None:
    """The error names the file, the exact place and the problem."""
    err = exc_info.value
    message = str(err)
    assert err.source == str(tmp_path / "lab.yaml")
    assert message.startswith(f"{tmp_path / 'lab.yaml'}: ")
    assert err.place == place
    if place:
        assert f": {place}: " in message
    for word in words:
        assert word.lower() in err.problem.lower(), message
        assert word.lower() in message.lower()


def mutated(doc: dict, change) -> dict:
    doc = copy.deepcopy(doc)
    change(doc)
    return doc


# ------------------------------------------------------------------ good files

def test_example_file_loads_with_every_section(tmp_path):
    net = model.load(str(EXAMPLE))
    assert net.source == str(EXAMPLE)
    assert [(s.name, s.vlan) for s in net.segments] == [
        ("dmz", 10), ("internal", 20), ("management", 30)]
    assert [h.name for h in net.hypervisors] == ["hv1", "hv2"]
    assert net.hypervisor("hv1").special_ports() == {1: "uplink_port", 2: "firewall_port",
                                                      3: "ids_port"}
    assert net.hypervisor("hv2").special_ports() == {1: "uplink_port", 2: "firewall_port"}
    assert net.mirror_vlan == 900
    assert net.hypervisor("hv2").learning_ports == (model.LearningPort(20, "internal", 2),)
    assert len(net.vms) == 8
    web1 = net.vm("web1")
    assert (web1.hypervisor, web1.port, web1.segment, web1.mac, web1.ip) == (
        "hv1", 10, "dmz", "02:00:00:00:10:01", ipaddress.IPv4Address("10.0.10.1"))
    assert net.policy.mode("dmz", "dmz") == "allow"
    assert net.policy.mode("dmz", "internal") == "deny"


def test_same_port_number_on_two_hypervisors_is_fine(example_doc, tmp_path):
    net = load_doc(tmp_path, example_doc)
    assert net.vm("web1").port == net.vm("web3").port == 10


def test_mac_is_normalised_to_lower_case(example_doc, tmp_path):
    doc = mutated(example_doc, lambda d: d["vms"]["web1"].update(mac="02:AB:00:00:10:01"))
    assert load_doc(tmp_path, doc).vm("web1").mac == "02:ab:00:00:10:01"


def test_dpid_may_be_written_as_colon_separated_hex(example_doc, tmp_path):
    doc = mutated(example_doc,
                  lambda d: d["hypervisors"]["hv2"].update(dpid="00:00:00:00:00:00:01:0a"))
    assert load_doc(tmp_path, doc).hypervisor("hv2").dpid == 0x10A


def test_learning_port_cap_defaults_to_options(example_doc, tmp_path):
    def change(d):
        del d["hypervisors"]["hv2"]["learning_ports"][0]["max_hosts"]
        d["options"] = {"max_hosts_per_port": 7}
    net = load_doc(tmp_path, mutated(example_doc, change))
    assert net.hypervisor("hv2").learning_ports[0].max_hosts == 7


def test_policy_pairs_and_per_segment_modes_are_read(example_doc, tmp_path):
    def change(d):
        d["policy"] = {"default": "allow", "segments": {"dmz": "deny"},
                       "pairs": [{"segments": ["dmz", "internal"], "mode": "allow"}]}
    net = load_doc(tmp_path, mutated(example_doc, change))
    assert net.policy.mode("dmz", "dmz") == "deny"
    assert net.policy.mode("internal", "internal") == "allow"
    assert net.policy.mode("internal", "dmz") == "allow"          # pairs are unordered
    assert net.policy.mode("dmz", "management") == "deny"         # absent pair


def test_subnet_accepts_address_inside_it(example_doc, tmp_path):
    doc = mutated(example_doc, lambda d: d["segments"]["dmz"].update(subnet="10.0.10.0/24"))
    assert load_doc(tmp_path, doc).segment("dmz").subnet == ipaddress.IPv4Network(
        "10.0.10.0/24")


# ------------------------------------------------------------------ bad files

def set_vm(vm, **fields):
    return lambda d: d["vms"][vm].update(fields)


BAD_DOCS = {
    "unknown segment": (set_vm("web1", segment="dmz2"),
                        "vms.web1.segment", ["unknown segment", "dmz2"]),
    "unknown hypervisor": (set_vm("web1", hypervisor="hv9"),
                           "vms.web1.hypervisor", ["unknown hypervisor", "hv9"]),
    "duplicate MAC": (set_vm("web2", mac="02:00:00:00:10:01"),
                      "vms.web2.mac", ["already used", "web1"]),
    "duplicate MAC in other case": (set_vm("web2", mac="02:00:00:00:10:01".upper()),
                                    "vms.web2.mac", ["already used", "web1"]),
    "duplicate IP": (set_vm("web2", ip="10.0.10.1"),
                     "vms.web2.ip", ["already used", "web1"]),
    "duplicate VLAN": (lambda d: d["segments"]["internal"].update(vlan=10),
                       "segments.internal.vlan", ["already used", "dmz"]),
    "connect_from not an address": (
        lambda d: d["hypervisors"]["hv1"].update(connect_from=["10.0.0.300"]),
        "hypervisors.hv1.connect_from[0]", ["not an address or network"]),
    "connect_from not a list": (
        lambda d: d["hypervisors"]["hv1"].update(connect_from="10.0.0.1"),
        "hypervisors.hv1.connect_from", ["non-empty list"]),
    "duplicate dpid": (lambda d: d["hypervisors"]["hv2"].update(dpid=1),
                       "hypervisors.hv2.dpid", ["already used", "hv1"]),
    "duplicate dpid written in hex": (
        lambda d: d["hypervisors"]["hv2"].update(dpid="00:00:00:00:00:00:00:01"),
        "hypervisors.hv2.dpid", ["already used", "hv1"]),
    "bad dpid string": (lambda d: d["hypervisors"]["hv2"].update(dpid="zz:01"),
                        "hypervisors.hv2.dpid", ["not a datapath id"]),
    "port used by two VMs": (set_vm("web2", port=10),
                             "vms.web2.port", ["already", "web1"]),
    "VM on the uplink port": (set_vm("web1", port=1),
                              "vms.web1.port", ["already", "uplink"]),
    "VM on the firewall port": (set_vm("web1", port=2),
                                "vms.web1.port", ["already", "firewall"]),
    "VM on a learning port": (set_vm("web3", port=20),
                              "vms.web3.port", ["already", "learning port"]),
    "firewall port is the uplink": (
        lambda d: d["hypervisors"]["hv1"].update(firewall_port=1),
        "hypervisors.hv1.firewall_port", ["already", "uplink"]),
    "learning port is the uplink": (
        lambda d: d["hypervisors"]["hv2"]["learning_ports"][0].update(port=1),
        "hypervisors.hv2.learning_ports[0].port", ["already", "uplink"]),
    "learning port in unknown segment": (
        lambda d: d["hypervisors"]["hv2"]["learning_ports"][0].update(segment="lab"),
        "hypervisors.hv2.learning_ports[0].segment", ["unknown segment", "lab"]),
    "VLAN 0": (lambda d: d["segments"]["dmz"].update(vlan=0),
               "segments.dmz.vlan", ["out of range", "1..4094"]),
    "VLAN 4095": (lambda d: d["segments"]["dmz"].update(vlan=4095),
                  "segments.dmz.vlan", ["out of range", "1..4094"]),
    "VLAN as a string": (lambda d: d["segments"]["dmz"].update(vlan="10"),
                         "segments.dmz.vlan", ["must be an integer"]),
    "VLAN as a boolean": (lambda d: d["segments"]["dmz"].update(vlan=True),
                          "segments.dmz.vlan", ["must be an integer"]),
    "port as a word": (set_vm("web1", port="ten"),
                       "vms.web1.port", ["must be an integer", "ten"]),
    "port as a numeric string": (set_vm("web1", port="10"),
                                 "vms.web1.port", ["must be an integer"]),
    "port as a float": (set_vm("web1", port=10.5),
                        "vms.web1.port", ["must be an integer"]),
    "port 0": (set_vm("web1", port=0), "vms.web1.port", ["out of range"]),
    "port at OFPP_MAX": (set_vm("web1", port=0xFFFFFF01),
                         "vms.web1.port", ["out of range"]),
    "MAC too short": (set_vm("web1", mac="02:00:00:00:10"),
                      "vms.web1.mac", ["not a MAC address"]),
    "MAC with bad digits": (set_vm("web1", mac="02:00:00:00:10:zz"),
                            "vms.web1.mac", ["not a MAC address"]),
    "MAC with dashes": (set_vm("web1", mac="02-00-00-00-10-01"),
                        "vms.web1.mac", ["not a MAC address"]),
    "multicast MAC": (set_vm("web1", mac="01:00:5e:00:00:01"),
                      "vms.web1.mac", ["multicast"]),
    "broadcast MAC": (set_vm("web1", mac="ff:ff:ff:ff:ff:ff"),
                      "vms.web1.mac", ["multicast"]),
    "all-zero MAC": (set_vm("web1", mac="00:00:00:00:00:00"),
                     "vms.web1.mac", ["all-zero"]),
    "bad IP": (set_vm("web1", ip="10.0.10.300"), "vms.web1.ip", ["not an IPv4 address"]),
    "IPv6 address": (set_vm("web1", ip="fd00::1"), "vms.web1.ip", ["not an IPv4 address"]),
    "multicast IP": (set_vm("web1", ip="224.0.0.1"), "vms.web1.ip", ["not a host address"]),
    "IP outside the segment subnet": (
        lambda d: (d["segments"]["dmz"].update(subnet="10.0.10.0/24"),
                   d["vms"]["web1"].update(ip="10.0.20.9")),
        "vms.web1.ip", ["outside", "dmz", "10.0.10.0/24"]),
    "bad subnet": (lambda d: d["segments"]["dmz"].update(subnet="10.0.10.1/24"),
                   "segments.dmz.subnet", ["not an IPv4 network"]),
    "unknown key in a VM": (set_vm("web1", colour="red"),
                            "vms.web1.colour", ["unknown key"]),
    "unknown key in a hypervisor": (
        lambda d: d["hypervisors"]["hv1"].update(uplink=1),
        "hypervisors.hv1.uplink", ["unknown key"]),
    "unknown top-level key": (lambda d: d.update(routers={}), "routers", ["unknown key"]),
    "unknown option": (lambda d: d.update(options={"max_flows": 3}),
                       "options.max_flows", ["unknown key"]),
    "missing VM key": (lambda d: d["vms"]["web1"].pop("ip"),
                       "vms.web1", ["missing required key 'ip'"]),
    "missing segment VLAN": (lambda d: d["segments"]["dmz"].pop("vlan"),
                             "segments.dmz", ["missing required key 'vlan'"]),
    "missing dpid": (lambda d: d["hypervisors"]["hv1"].pop("dpid"),
                     "hypervisors.hv1", ["missing required key 'dpid'"]),
    "missing top-level section": (lambda d: d.pop("vms"),
                                  "top level", ["missing required key 'vms'"]),
    "no segments": (lambda d: d.update(segments={}), "segments", ["at least one"]),
    "VM that is not a mapping": (lambda d: d["vms"].update(web1="hv1"),
                                 "vms.web1", ["must be a mapping"]),
    "bad VM name": (lambda d: d["vms"].update({"1web": d["vms"].pop("web1")}),
                    "vms.1web", ["invalid name"]),
    "unknown segment in policy pair": (
        lambda d: d["policy"].update(pairs=[{"segments": ["dmz", "lab"], "mode": "allow"}]),
        "policy.pairs[0].segments", ["unknown segment", "lab"]),
    "policy pair of one segment": (
        lambda d: d["policy"].update(pairs=[{"segments": ["dmz", "dmz"], "mode": "allow"}]),
        "policy.pairs[0].segments", ["two different segments"]),
    "policy pair given twice": (
        lambda d: d["policy"].update(pairs=[
            {"segments": ["dmz", "internal"], "mode": "allow"},
            {"segments": ["internal", "dmz"], "mode": "deny"}]),
        "policy.pairs[1].segments", ["already given a mode"]),
    "invalid pair mode": (
        lambda d: d["policy"].update(pairs=[{"segments": ["dmz", "internal"],
                                             "mode": "permit"}]),
        "policy.pairs[0].mode", ["invalid mode", "permit"]),
    "invalid default mode": (lambda d: d["policy"].update(default="permit"),
                             "policy.default", ["invalid mode", "permit"]),
    "invalid per-segment mode": (lambda d: d["policy"].update(segments={"dmz": "maybe"}),
                                 "policy.segments.dmz", ["invalid mode", "maybe"]),
    "unknown segment in per-segment policy": (
        lambda d: d["policy"].update(segments={"lab": "deny"}),
        "policy.segments.lab", ["unknown segment", "lab"]),
    # The model compares these values against sets of names; a value of the
    # wrong type must still be a NetworkFileError, not a crash.
    "segment given as a list": (set_vm("web1", segment=["dmz"]), "vms.web1.segment", []),
    "hypervisor given as a list": (set_vm("web1", hypervisor=["hv1"]),
                                   "vms.web1.hypervisor", []),
    "policy pair member given as a list": (
        lambda d: d["policy"].update(pairs=[{"segments": [["dmz"], "internal"],
                                             "mode": "allow"}]),
        "policy.pairs[0].segments", []),
}


@pytest.mark.parametrize("change, place, words", BAD_DOCS.values(), ids=BAD_DOCS.keys())
def test_invalid_network_file_is_rejected_with_file_place_and_problem(
        example_doc, tmp_path, change, place, words):
    doc = mutated(example_doc, change)
    with pytest.raises(NetworkFileError) as exc_info:
        load_doc(tmp_path, doc)
    assert_error(exc_info, tmp_path, place, *words)


def test_yaml_syntax_error_gives_line_and_column(tmp_path):
    text = EXAMPLE.read_text().replace("  dmz:        {vlan: 10}", "  dmz:        {vlan: 10")
    line = text.splitlines().index("  dmz:        {vlan: 10") + 1
    with pytest.raises(NetworkFileError) as exc_info:
        load_text(tmp_path, text)
    assert_error(exc_info, tmp_path, exc_info.value.place, "YAML syntax error")
    assert exc_info.value.place.startswith("line ")
    assert ", column " in exc_info.value.place
    reported = int(exc_info.value.place.split()[1].rstrip(","))
    assert line <= reported <= line + 1        # PyYAML notices at the next token


def test_yaml_tab_indentation_error_points_at_the_tab(tmp_path):
    text = "segments:\n  dmz: {vlan: 10}\n\tinternal: {vlan: 20}\n"
    with pytest.raises(NetworkFileError) as exc_info:
        load_text(tmp_path, text)
    assert exc_info.value.place == "line 3, column 1"
    assert "YAML syntax error" in str(exc_info.value)


@pytest.mark.parametrize("text", ["", "\n\n", "# nothing here yet\n"],
                         ids=["empty", "blank lines", "only a comment"])
def test_empty_file_is_rejected(tmp_path, text):
    with pytest.raises(NetworkFileError) as exc_info:
        load_text(tmp_path, text)
    assert_error(exc_info, tmp_path, "", "empty")
    assert str(exc_info.value) == f"{tmp_path / 'lab.yaml'}: the file is empty"


def test_file_that_is_a_list_is_rejected(tmp_path):
    with pytest.raises(NetworkFileError) as exc_info:
        load_text(tmp_path, "- segments\n- vms\n")
    assert_error(exc_info, tmp_path, "", "must be a mapping", "list")


def test_duplicate_vm_name_is_rejected_not_silently_overwritten(tmp_path):
    # YAML lets a mapping repeat a key and PyYAML keeps the last value: a
    # copy-pasted VM block would silently replace the first VM.
    text = EXAMPLE.read_text().replace("  web3: ", "  web1: ")
    with pytest.raises(NetworkFileError) as exc_info:
        load_text(tmp_path, text)
    assert "web1" in str(exc_info.value)


def test_load_of_missing_file_names_the_file(tmp_path):
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(NetworkFileError) as exc_info:
        model.load(str(path))
    err = exc_info.value
    assert err.source == str(path)
    assert err.place == ""
    assert "cannot read" in err.problem
    assert "No such file" in err.problem
    assert str(err).startswith(f"{path}: cannot read")


def test_parse_names_the_given_source(example_doc):
    bad = mutated(example_doc, set_vm("web1", segment="nope"))
    with pytest.raises(NetworkFileError) as exc_info:
        model.parse(yaml.safe_dump(bad), source="inline.yaml")
    assert str(exc_info.value).startswith("inline.yaml: vms.web1.segment: ")


def test_a_file_that_is_not_utf8_is_refused_with_its_place(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(EXAMPLE.read_bytes().replace(b"# The demo", b"# Th\xe9 demo", 1))
    with pytest.raises(model.NetworkFileError) as e:
        model.read_document(str(path))
    assert str(e.value).startswith(f"{path}: line 2: not UTF-8 text (byte 0xe9")


def test_connect_from_takes_addresses_and_networks():
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["hypervisors"]["hv1"]["connect_from"] = ["192.0.2.7", "198.51.100.0/24", "fd00::/64"]
    hv1 = model.from_document(doc, "x.yaml").hypervisor("hv1")
    assert hv1.accepts_connection_from("192.0.2.7")
    assert hv1.accepts_connection_from("198.51.100.200")
    assert hv1.accepts_connection_from("fd00::5")
    assert not hv1.accepts_connection_from("192.0.2.8")
    assert not hv1.accepts_connection_from("not-an-address")
    assert model.from_document(doc, "x.yaml").hypervisor("hv2").accepts_connection_from(
        "203.0.113.1"), "without connect_from: any"
