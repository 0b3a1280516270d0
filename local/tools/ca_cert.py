"""Fetch the root CA certificate devices pin, from a deployed stack's root CA.

    python -m tools.ca_cert --out device-ca.pem [--stack-name NAME] [--region R]
    python -m tools.ca_cert --out device-ca.pem --state .local/stack.json   # offline

Reads the stack's ``CertificateAuthorityArn`` output and writes
GetCertificateAuthorityCertificate's certificate (the root: this CA is self-signed) to the
file, for the factory to bake into each device's firmware.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from tools import deployed


def fetch(stack: deployed.Stack) -> str:
    """The CA certificate, PEM."""
    arn = stack.output("CertificateAuthorityArn")
    try:
        answer = stack.client("acm-pca").get_certificate_authority_certificate(
            CertificateAuthorityArn=arn
        )
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        raise deployed.StackError(f"{arn}: GetCertificateAuthorityCertificate: {code}") from exc
    except BotoCoreError as exc:
        raise deployed.StackError(f"AWS Private CA does not answer: {exc}") from exc
    return str(answer["Certificate"]).strip() + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.ca_cert",
        description="Write the root CA certificate devices pin (the stack's root CA) to a file.",
    )
    parser.add_argument("--out", type=Path, required=True, help="the PEM file to write")
    deployed.add_options(parser)
    args = parser.parse_args(argv)
    try:
        pem = fetch(deployed.from_args(args))
    except deployed.StackError as exc:
        print(f"ca-cert: {exc}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(pem, encoding="utf-8")
    print(f"the root CA certificate devices pin is in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
