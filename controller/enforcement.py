"""What a confirmed policy change promises about the data plane.

A write is answered once every hypervisor's OpenFlow tables hold it (bundle
committed, barrier answered). Open vSwitch forwards from a cache of
datapath flows (megaflows), translated from those tables; its revalidator
threads re-translate the cache after a table change, asynchronously, so a
packet sent just after the answer can still take the old actions. The
kernel datapath is revalidated by the same threads, so it has the same
window. DATAPATH_WINDOW_MS bounds it: the p99 measured by
bench/enforcement.py on real OVS, rounded up with a margin (README,
"What a 200 means"). Every policy answer carries it.
"""
DATAPATH_WINDOW_MS = 10
