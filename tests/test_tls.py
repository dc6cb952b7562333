"""OpenFlow over TLS on a real controller process: any number of switches
with a certificate signed by the CA get in, a client without one does not.

Ryu 4.34 alone serves only the first TLS switch (controller/shim.py says
why); these tests fail without the shim's fix. Certificates are made with
the openssl command line in a temporary directory."""
from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import struct
import subprocess
import time

import pytest

from controller import shim
from topologies.lab import free_ports
from topologies.probes import wait_for

from .test_rest_process import Controller

OFPT_HELLO = 0
OFP13 = 0x04
LEAF_EXT = ("basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth,clientAuth\n"
            "subjectAltName=IP:127.0.0.1\n")
CA_EXT = ("basicConstraints=critical,CA:TRUE\n"
          "keyUsage=critical,keyCertSign,cRLSign\n"
          "subjectKeyIdentifier=hash\n")


def _openssl(tmp, *args):
    subprocess.run(["openssl", *args], cwd=tmp, check=True, capture_output=True,
                   timeout=60)


def _request(tmp, name):
    _openssl(tmp, "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout",
             f"{name}-key.pem", "-out", f"{name}.csr", "-subj", f"/CN=vguard-test-{name}")


def make_pki(tmp) -> dict[str, tuple[str, str]]:
    """{name: (certificate, key)} for ca, ctl, sw1, sw2 (signed by ca) and
    rogue (self-signed)."""
    (tmp / "ca.ext").write_text(CA_EXT)
    (tmp / "leaf.ext").write_text(LEAF_EXT)
    _request(tmp, "ca")
    _openssl(tmp, "x509", "-req", "-in", "ca.csr", "-signkey", "ca-key.pem",
             "-days", "2", "-extfile", "ca.ext", "-out", "ca-cert.pem")
    for name in ("ctl", "sw1", "sw2"):
        _request(tmp, name)
        _openssl(tmp, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca-cert.pem",
                 "-CAkey", "ca-key.pem", "-CAcreateserial", "-days", "2",
                 "-extfile", "leaf.ext", "-out", f"{name}-cert.pem")
    _request(tmp, "rogue")
    _openssl(tmp, "x509", "-req", "-in", "rogue.csr", "-signkey", "rogue-key.pem",
             "-days", "2", "-extfile", "leaf.ext", "-out", "rogue-cert.pem")
    return {n: (str(tmp / f"{n}-cert.pem"), str(tmp / f"{n}-key.pem"))
            for n in ("ca", "ctl", "sw1", "sw2", "rogue")}


@pytest.fixture(scope="module")
def tls_controller(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tls")
    pki = make_pki(tmp)
    (port,) = free_ports(1)
    c = Controller(tmp, "--ofp-ssl-listen-port", str(port),
                   "--ctl-privkey", pki["ctl"][1], "--ctl-cert", pki["ctl"][0],
                   "--ca-certs", pki["ca"][0],
                   "--state-file", str(tmp / "policy.json")).start()
    c.ssl_port, c.pki = port, pki
    yield c
    c.stop()


def _connect(port: int, ca: str, cert: tuple[str, str] | None) -> ssl.SSLSocket:
    """A TLS connection to the controller, which must present a certificate
    for 127.0.0.1 signed by the CA; `cert` is the client's (cert, key)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    if cert:
        ctx.load_cert_chain(*cert)
    deadline = time.monotonic() + 10
    while True:      # the REST API may answer a moment before the OpenFlow port
        try:
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    try:
        return ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    except BaseException:
        raw.close()
        raise


def _send_hello(tls: ssl.SSLSocket) -> None:
    tls.sendall(struct.pack("!BBHI", OFP13, OFPT_HELLO, 8, 1))


def _read_header(tls: ssl.SSLSocket) -> bytes:
    data = b""
    while len(data) < 8:
        chunk = tls.recv(8 - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _is_hello(header: bytes) -> bool:
    return len(header) == 8 and header[0] == OFP13 and header[1] == OFPT_HELLO


def _refused(port: int, ca: str, cert: tuple[str, str] | None) -> str | None:
    """Why the controller refused this client, or None if it sent a HELLO.
    With TLS 1.3 the server checks the client certificate after the client's
    side of the handshake is done, so the refusal may only show on reading."""
    try:
        with _connect(port, ca, cert) as tls:
            _send_hello(tls)
            header = _read_header(tls)
    except (ssl.SSLError, ConnectionError) as e:
        return f"{type(e).__name__}: {e}"
    return None if _is_hello(header) else f"closed after {header!r}"


def test_shim_patches_the_tls_listener_once():
    from ryu.lib.hub import StreamServer
    shim.apply()
    patched = StreamServer.__init__
    shim.apply()
    assert StreamServer.__init__ is patched and patched._vguard_tls_fix


def test_every_switch_with_a_ca_signed_certificate_gets_in_and_others_are_refused(
        tls_controller):
    port, pki = tls_controller.ssl_port, tls_controller.pki
    ca = pki["ca"][0]
    switches, stalled = [], None
    try:
        # Three at once (sw1's certificate twice), with refused clients in
        # between: a refusal must not spoil the listener for later switches.
        switches.append(_connect(port, ca, pki["sw1"]))
        # Nor may a client that never starts its handshake hold up the others.
        stalled = socket.create_connection(("127.0.0.1", port), timeout=10)
        assert _refused(port, ca, pki["rogue"]), "a self-signed client got a HELLO"
        switches.append(_connect(port, ca, pki["sw2"]))
        assert _refused(port, ca, None), "a client without a certificate got a HELLO"
        switches.append(_connect(port, ca, pki["sw1"]))
        for tls in switches:
            _send_hello(tls)
        headers = [_read_header(tls) for tls in switches]
        assert all(_is_hello(h) for h in headers), headers
        assert _refused(port, ca, pki["rogue"]), "a self-signed client got a HELLO"
        # Still open to a fourth after all that.
        with _connect(port, ca, pki["sw2"]) as tls:
            _send_hello(tls)
            assert _is_hello(_read_header(tls))
    finally:
        for sock in switches + [stalled]:
            if sock:
                sock.close()
    log = tls_controller.log.read_text()
    assert "OpenFlow TLS handshake with" in log and "refused" in log, log[-2000:]


# ---------------------------------------------------------------- real OVS

BRIDGES = {"tls1": 1, "tls2": 2}       # name: datapath ID (the example's two)


def _vsctl(*args, check=True) -> str:
    return subprocess.run(["ovs-vsctl", "--timeout=10", *args], capture_output=True,
                          text=True, check=check, timeout=30).stdout.strip()


def _ovs_usable() -> str | None:
    if os.geteuid() != 0 or not shutil.which("ovs-vsctl"):
        return "needs root and Open vSwitch"
    try:
        _vsctl("show")
        ssl_config = _vsctl("get-ssl")
    except (subprocess.SubprocessError, OSError):
        return "Open vSwitch is not running"
    if ssl_config:   # global to this OVS: someone else's to change, not ours
        return "Open vSwitch already has an SSL configuration"
    if set(BRIDGES) & set(_vsctl("list-br").split()):
        return "a bridge named tls1 or tls2 already exists"
    return None


@pytest.mark.lab
def test_two_ovs_bridges_connect_over_tls(tls_controller):
    reason = _ovs_usable()
    if reason:
        pytest.skip(reason)
    pki = tls_controller.pki
    target = f"ssl:127.0.0.1:{tls_controller.ssl_port}"
    try:
        _vsctl("set-ssl", pki["sw1"][1], pki["sw1"][0], pki["ca"][0])
        for br, dpid in BRIDGES.items():
            _vsctl("add-br", br, "--", "set", "bridge", br, "datapath_type=netdev",
                   "fail_mode=secure", "protocols=OpenFlow13",
                   f"other-config:datapath-id={dpid:016x}",
                   "--", "set-controller", br, target)
        def connected():
            return {br: _vsctl("get", "controller", br, "is_connected") for br in BRIDGES}

        assert wait_for(lambda: set(connected().values()) == {"true"}, 30), connected()

        # The controller took both as the example's hypervisors.
        def hypervisors():
            status, text = tls_controller.call("GET", "/api/v1/hypervisors")
            assert status == 200, text
            return sorted(int(h["dpid"], 16) for h in json.loads(text) if h["connected"])

        assert wait_for(lambda: hypervisors() == sorted(BRIDGES.values()), 15), hypervisors()
    finally:
        for br in BRIDGES:
            _vsctl("--if-exists", "del-br", br, check=False)
        _vsctl("del-ssl", check=False)

