"""Helpers shared by the test suites (offline stack fixtures, token minting)."""
