"""BLE onboarding: what the device and the phone app share.

`protocol` holds the wire format (UUIDs, byte layouts, status codes) and nothing else, so
firmware engineers can read it next to docs/ble-protocol.md; `gatt` the service on both sides
(bumble server and client proxy); `rules` the encryption scheme names and the DSN rule;
`credentials` the device's checks and storage; `events` the lines the scripts print for
whoever started them; `radio` the offline virtual radio; `demo` starts the processes.
"""
