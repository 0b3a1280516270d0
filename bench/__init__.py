"""Benchmarks of the provisioning API: figures printed, nothing asserted (DESIGN §6)."""
