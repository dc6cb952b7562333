#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine, as root: Debian packages,
# Open vSwitch running, and a virtual environment (.venv) that also sees
# Debian's mininet. Safe to run again; it only does what is missing.
#   bash scripts/setup.sh [demo|test|bench]
# demo (the default): what the demo lab needs; test: and what the test
# suite needs; bench: and the baselines the benchmarks run (Faucet).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-demo}
case "$profile" in
    demo|test|bench) ;;
    *) echo "usage: scripts/setup.sh [demo|test|bench]" >&2; exit 2 ;;
esac

APT_PACKAGES=(openvswitch-switch mininet iputils-ping tcpdump ethtool nftables
              dsniff iproute2 procps psmisc dnsmasq-base isc-dhcp-client)
if [ "$profile" != demo ]; then
    # chromium and its driver: the web console's test drives a real headless browser.
    APT_PACKAGES+=(iperf3 openssl docker-compose chromium chromium-driver)
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The kernel here has no OVS module; ovs-ctl still starts ovsdb-server and
# ovs-vswitchd, and bridges use the userspace (netdev) datapath.
if ! ovs-vsctl --timeout=2 show >/dev/null 2>&1; then
    echo "setup: starting Open vSwitch"
    /usr/share/openvswitch/scripts/ovs-ctl start --system-id=random >/dev/null 2>&1 || true
    ovs-vsctl --timeout=10 show >/dev/null
fi

# Debian's mininet is built for the system Python, so the venv must be made
# from it and see its site-packages.
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    /usr/bin/python3 -m venv --system-site-packages .venv
fi
# The demo: the controller's requirements and scapy (crafted frames), at the
# versions requirements.txt pins; the tests and benchmarks: all of it.
if [ "$profile" = demo ]; then
    requirements=(-r requirements-controller.txt "$(grep -E '^scapy==' requirements.txt)")
else
    requirements=(-r requirements.txt)
fi
stamp=.venv/.requirements-$profile.sha256
want=$(cat requirements.txt requirements-controller.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: installing Python requirements ($profile)"
    # Ryu 4.34's setup.py needs an old setuptools and no build isolation.
    .venv/bin/pip install -q 'setuptools<67' wheel
    .venv/bin/pip install -q --no-build-isolation "${requirements[@]}"
    echo "$want" > "$stamp"
fi

# Faucet, a baseline the benchmarks (bench/) measure against, in a venv of
# its own: it pulls os-ken, which must not meet Ryu in .venv.
if [ "$profile" = bench ] && [ ! -x .venv-faucet/bin/faucet ]; then
    echo "setup: installing Faucet 1.10.12 into .venv-faucet"
    rm -rf .venv-faucet
    /usr/bin/python3 -m venv .venv-faucet
    .venv-faucet/bin/pip install -q faucet==1.10.12
fi
