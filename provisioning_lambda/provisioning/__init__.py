"""Provisioning API: issues a device certificate from AWS Private CA and registers it with IoT."""
