"""Write the phone app's config.json from a deployed stack's Outputs.

    python -m tools.app_config [--out webapp/config.json] [--stack-name NAME] [--region R]
    python -m tools.app_config --out /tmp/config.json --state .local/stack.json   # offline

Reads ``ApiUrl``, ``UserPoolId``, ``UserPoolClientId`` and ``Region`` (the stack's region when
an older stack has no such output) and writes the file the app fetches beside its index.html:
``{"apiUrl", "region", "userPoolId", "clientId"}``, plus ``cognitoEndpoint`` for the offline
stack, whose Cognito is the emulator. It is generated, never edited by hand (webapp/config.json
is git-ignored). ``devstack up`` needs none: its app server answers /config.json itself.

It then prints the headers the app's host must send with every file (the Content-Security-Policy
naming this stack's API and Cognito origins, nosniff, no-referrer) and the Content-Types the
browser needs, the same the offline app server sends.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from devstack.webapp_server import CONTENT_TYPES, app_config, security_headers
from tools import deployed

DEFAULT_OUT = Path("webapp/config.json")


def document(stack: deployed.Stack) -> dict[str, str]:
    """The app's configuration for ``stack``."""
    return app_config(
        api_url=stack.api_url,
        region=stack.outputs.get("Region") or stack.region,
        user_pool_id=stack.output("UserPoolId"),
        client_id=stack.output("UserPoolClientId"),
        cognito_endpoint=stack.endpoint_url,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.app_config",
        description=(
            "Write the phone app's config.json (API URL, region, user pool and app client) from "
            "a deployed stack's Outputs, for hosting webapp/ (README.md, 'The phone app')."
        ),
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="the file to write (default %(default)s)"
    )
    deployed.add_options(parser)
    args = parser.parse_args(argv)
    try:
        config = document(deployed.from_args(args))
    except deployed.StackError as exc:
        print(f"app-config: {exc}", file=sys.stderr)
        return 2
    if not args.out.parent.is_dir():
        print(
            f"app-config: no folder {args.out.parent} to write {args.out.name} in", file=sys.stderr
        )
        return 2
    try:
        args.out.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        print(f"app-config: cannot write {args.out}: {exc.strerror}", file=sys.stderr)
        return 2
    print(f"the app's configuration is in {args.out} (API {config['apiUrl']})")
    print("serve the app's folder over HTTPS with these headers on every file:")
    for name, value in security_headers(config).items():
        print(f"  {name}: {value}")
    print("and these Content-Types:")
    for suffix in (".html", ".js", ".css", ".json", ".webmanifest", ".svg", ".png"):
        print(f"  *{suffix}: {CONTENT_TYPES[suffix]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
