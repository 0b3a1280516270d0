"""What a device does with its key, as commands for trying the API by hand (curl).

    .venv/bin/python -m onboarding_ble.keytool new .local/SN-0001.key   # prints the public key
    .venv/bin/python -m onboarding_ble.keytool open answer.json --key .local/SN-0001.key \\
        --dsn SN-0001 --ca .local/device-ca.pem --out .local/devices/SN-0001

``new`` makes the device's X25519 key pair: the private key goes to a new 0600 file, the
public key (base64, what ``POST /certificate`` takes as ``publicKey``) is printed. ``open``
runs the device's own checks on a ``POST /certificate`` answer (the certificate chains to the
pinned CA and names the DSN, the key decrypts and matches the certificate) and stores the
credentials as device.py does, so ``device.py --state-dir DIR`` connects with them. The
private key is never printed.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from onboarding_ble import credentials
from onboarding_ble.protocol import ProtocolError

EXIT_OK, EXIT_USAGE, EXIT_REJECTED = 0, 2, 5


def new_key(path: Path) -> bytes:
    """A fresh X25519 key in a new 0600 PEM file; the raw public key."""
    key = X25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_key(path: Path) -> X25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, X25519PrivateKey):
        raise ValueError(f"{path} is not an X25519 private key")
    return key


def open_answer(
    answer: bytes, key: X25519PrivateKey, dsn: str, ca_pem: bytes, out: Path
) -> credentials.Credentials:
    """The device's checks on an answer, then its store: see ``credentials.verify_answer``."""
    verified = credentials.verify_answer(answer, key, dsn, credentials.load_ca(ca_pem))
    return credentials.store(out, verified)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=".venv/bin/python -m onboarding_ble.keytool",
        description="A device's X25519 key and what it does with a POST /certificate answer.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    new = commands.add_parser(
        "new",
        help="make an X25519 key pair; print the public key (base64)",
        description="Write a new X25519 private key (PEM, 0600) and print its public key.",
    )
    new.add_argument("key", type=Path, help="file for the private key (must not exist)")
    opened = commands.add_parser(
        "open",
        help="check and decrypt a POST /certificate answer, store the credentials",
        description=(
            "Run the device's checks on an answer and store certificate.pem, private_key.pem "
            "and device.json (0600) in --out, as device.py does. The key is never printed."
        ),
    )
    opened.add_argument("answer", type=Path, help="the JSON body POST /certificate returned")
    opened.add_argument("--key", type=Path, required=True, help="the private key from `new`")
    opened.add_argument("--dsn", required=True, help="the DSN the answer must be for")
    opened.add_argument(
        "--ca", type=Path, required=True, help="the pinned CA (`.venv/bin/devstack ca-cert`)"
    )
    opened.add_argument("--out", type=Path, required=True, help="the device's state directory")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "new":
            print(base64.b64encode(new_key(args.key)).decode())
            return EXIT_OK
        creds = open_answer(
            args.answer.read_bytes(), load_key(args.key), args.dsn, args.ca.read_bytes(), args.out
        )
    except ProtocolError as exc:  # before ValueError, which it is
        print(f"error: the answer is refused: {exc.status.name}: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    except FileExistsError:
        print(f"error: {args.key} exists; pick another file", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(
        f"OPENED thing={creds.thing_name} cert={creds.certificate_id}: the private key "
        f"decrypts and matches the certificate, which chains to the pinned CA; stored in "
        f"{creds.directory}"
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
