"""End-to-end: BLE provisioning and MQTT across processes (radio, broker, device, app)."""
