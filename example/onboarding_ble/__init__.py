"""BLE onboarding: the GATT provisioning service shared by the device and the phone app.

`protocol` holds the wire format (UUIDs, byte layouts, status codes) and nothing else, so
firmware engineers can read it next to docs/ble-protocol.md. `radio` is the offline virtual
radio, `broker` the offline MQTT broker that stands in for AWS IoT Core.
"""
