"""Benchmarks of the provisioning API: figures printed, nothing asserted.

The targets are in docs/architecture.md, section Performance.
"""
