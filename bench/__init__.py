"""Benchmarks against OVS NORMAL, simple_switch_13 and Faucet (see bench/README.md)."""
