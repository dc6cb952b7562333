"""Real DHCP servers and clients in lab hosts: Debian's dnsmasq and
isc-dhcp-client (dhclient), bounded and stopped by PID.

dnsmasq serves DHCP only (no DNS, no config file of the machine's);
dhclient uses topologies/dhclient-script, which sets the address and
touches no file (Debian's script would rewrite the machine's resolv.conf,
which lab hosts share).
"""
from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import tempfile

from topologies import probes

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dhclient-script")
LEASE_SECONDS = 120            # dnsmasq's shortest


class Server:
    """dnsmasq on `interface` of `host`, handing out `pool` (first, last) of
    `subnet`, until stop()."""

    def __init__(self, host, subnet: str, pool: tuple[str, str], interface: str | None = None,
                 router: str | None = None):
        self.host, self.dir = host, tempfile.mkdtemp(prefix=f"dnsmasq-{host.name}-")
        interface = interface or probes.intf(host)
        mask = ipaddress.IPv4Network(subnet).netmask
        argv = ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
                "--no-resolv", "--no-hosts", f"--interface={interface}",
                "--bind-interfaces", "--dhcp-authoritative", "--log-dhcp",
                "--log-facility=-", "--user=root", "--group=root",
                f"--dhcp-leasefile={self.dir}/leases", f"--pid-file={self.dir}/pid",
                f"--dhcp-range={pool[0]},{pool[1]},{mask},{LEASE_SECONDS}"]
        # No router option unless given (dnsmasq would offer itself).
        argv.append(f"--dhcp-option=option:router,{router}" if router
                    else "--dhcp-option=option:router")
        self.log = open(os.path.join(self.dir, "log"), "w+")
        self.proc = host.popen(argv, stdout=self.log, stderr=subprocess.STDOUT)
        if not probes.wait_for(lambda: "DHCP, IP range" in self.log_text()
                               or self.proc.poll() is not None, 10) \
                or self.proc.poll() is not None:
            raise RuntimeError(f"dnsmasq in {host.name} did not start: {self.log_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def log_text(self) -> str:
        with open(self.log.name) as f:
            return f.read()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class Client:
    """dhclient on a host's interface: lease() asks once (bounded), release()
    gives the address back and stops it."""

    def __init__(self, host, interface: str | None = None):
        self.host, self.interface = host, interface or probes.intf(host)
        self.dir = tempfile.mkdtemp(prefix=f"dhclient-{host.name}-")
        self.files = ["-sf", SCRIPT, "-cf", "/dev/null", "-pf", f"{self.dir}/pid",
                      "-lf", f"{self.dir}/leases"]

    def lease(self, seconds: int = 15) -> str | None:
        """The address it got, or None after `seconds`. dhclient stays
        behind in the host to renew it."""
        self.host.cmd(f"timeout {seconds} dhclient -1 -v {' '.join(self.files)} "
                      f"{self.interface} > {self.dir}/log 2>&1")
        return self.address()

    def address(self) -> str | None:
        out = self.host.cmd(f"ip -4 -o addr show dev {self.interface}")
        for word in out.split():
            if "/" in word and word[0].isdigit():
                return word.split("/")[0]
        return None

    def release(self) -> None:
        self.host.cmd(f"timeout 10 dhclient -r {' '.join(self.files)} {self.interface}")

    def stop(self) -> None:
        """Stop its daemon without releasing (the lease stays the server's)."""
        self.host.cmd(f"timeout 10 dhclient -x {' '.join(self.files)} {self.interface}")
