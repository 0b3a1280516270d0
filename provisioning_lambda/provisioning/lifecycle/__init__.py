"""The machinery every change to a device shares: the device's lease and its recovery
(lease.py), the certificate issuance engine (issuance.py) and the sweep that finishes what a
dead request left (sweep.py)."""
