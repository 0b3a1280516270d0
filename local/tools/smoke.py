"""Smoke-test a deployed stack as a phone app and a device would, then leave nothing behind.

    python -m tools.smoke [--stack-name NAME] [--region R]      # make smoke
    python -m tools.smoke --state .local/stack.json             # the offline stack

1. A member: AdminCreateUser (no e-mail sent), a permanent password, the Members group.
2. Sign-in: USER_PASSWORD_AUTH on the stack's public client; the ID token.
3. One device, ``SMOKE-<random>``: POST /certificate with a fresh X25519 key; the answer is
   checked as a device checks it (the certificate chains to the stack's CA and names the
   thing, the key decrypts and matches it: onboarding_ble.credentials).
4. GET /devices/{dsn} shows it ACTIVE; DELETE /devices/{dsn}/certificate revokes it; GET shows
   it REVOKED.
5. Clean-up, also after a failure: DELETE /devices/{dsn} (release), then the thing, its
   certificate and the device's row, then the user. The audit trail keeps the smoke device's
   entries, as it keeps every device's.

Each step prints one line; a failed step says which and why (status 1). Nothing secret is
printed: no password, token or key.
"""

from __future__ import annotations

import argparse
import base64
import json
import secrets
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from onboarding_ble import credentials
from onboarding_ble.protocol import ProtocolError
from tools import ca_cert, deployed

HTTP_TIMEOUT = 30.0  # seconds; API Gateway itself gives up after 29
# The release in the clean-up waits out a request that still holds the device, this long.
RELEASE_WAIT_SECONDS = 45.0
RELEASE_RETRY_SECONDS = 3.0


class SmokeFailed(RuntimeError):
    """A step of the smoke test failed: its message names the step and what was seen."""


@dataclass
class Smoke:
    """One run: what it made, so the clean-up removes exactly that."""

    stack: deployed.Stack
    say: Callable[[str], None] = print
    suffix: str = field(default_factory=lambda: secrets.token_hex(4))
    user_created: bool = False
    device_provisioned: bool = False
    thing_name: str | None = None
    certificate_id: str | None = None
    token: str | None = field(default=None, repr=False)

    @property
    def username(self) -> str:
        return f"smoke-{self.suffix}"

    @property
    def dsn(self) -> str:
        return f"SMOKE-{self.suffix.upper()}"

    # ------------------------------------------------------------ the API

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(  # noqa: S310 - the stack's own https (or local) URL
            self.stack.api_url + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": self.token or "", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as answer:  # noqa: S310
                return answer.status, json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, json.loads(exc.read() or b"null")
            except ValueError:
                return exc.code, None
        except (urllib.error.URLError, TimeoutError) as exc:
            raise SmokeFailed(f"{method} {path}: the API does not answer ({exc})") from exc

    def expect(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        status, answer = self.call(method, path, body)
        if status != 200:
            code = answer.get("code") if isinstance(answer, dict) else None
            raise SmokeFailed(f"{method} {path}: {status} {code or ''}".rstrip())
        return answer

    # ------------------------------------------------------------ the steps

    def create_member(self) -> str:
        cognito = self.stack.client("cognito-idp")
        pool = self.stack.output("UserPoolId")
        password = f"Sm0ke-{secrets.token_urlsafe(18)}!a1A"
        cognito.admin_create_user(
            UserPoolId=pool,
            Username=self.username,
            MessageAction="SUPPRESS",
            UserAttributes=[
                {"Name": "email", "Value": f"{self.username}@example.invalid"},
                {"Name": "email_verified", "Value": "true"},
            ],
        )
        self.user_created = True
        cognito.admin_set_user_password(
            UserPoolId=pool, Username=self.username, Password=password, Permanent=True
        )
        cognito.admin_add_user_to_group(
            UserPoolId=pool, Username=self.username, GroupName="Members"
        )
        self.say(f"smoke: member {self.username} created")
        return password

    def sign_in(self, password: str) -> None:
        answer = self.stack.client("cognito-idp").initiate_auth(
            AuthFlow="USER_PASSWORD_AUTH",
            ClientId=self.stack.output("UserPoolClientId"),
            AuthParameters={"USERNAME": self.username, "PASSWORD": password},
        )
        token = answer.get("AuthenticationResult", {}).get("IdToken")
        if not token:
            raise SmokeFailed(f"sign-in: no ID token (challenge {answer.get('ChallengeName')})")
        self.token = token
        self.say(f"smoke: {self.username} signed in")

    def provision(self) -> None:
        key = X25519PrivateKey.generate()
        public = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        ca_pem = ca_cert.fetch(self.stack).encode()
        # From here on the device may exist, whatever becomes of this request (an interrupt, a
        # lost answer): the clean-up looks for it either way.
        self.device_provisioned = True
        status, answer = self.call(
            "POST",
            "/certificate",
            {"DSN": self.dsn, "publicKey": base64.b64encode(public).decode()},
        )
        if status == 200:
            self.thing_name = answer.get("thingName")
            self.certificate_id = answer.get("certificateId")
        else:
            code = answer.get("code") if isinstance(answer, dict) else None
            raise SmokeFailed(f"POST /certificate: {status} {code or ''}".rstrip())
        try:
            verified = credentials.verify_answer(
                json.dumps(answer).encode(),
                key,
                self.dsn,
                credentials.load_ca(ca_pem),
                thing_prefix=self.stack.outputs.get("ThingPrefix"),
            )
        except ProtocolError as exc:
            raise SmokeFailed(
                f"POST /certificate: a device would refuse the answer: {exc}"
            ) from exc
        self.say(
            f"smoke: device {self.dsn} provisioned: thing {verified.thing_name}, certificate "
            f"{verified.certificate_id[:12]}..., chains to the stack's CA, key decrypts"
        )

    def bad_body(self) -> None:
        """A body with a typo (``dsn`` for ``DSN``): the gateway must refuse it naming the field,
        in the API's JSON error shape. This is the one check of the gateway's BAD_REQUEST_BODY
        answer (it quotes ``$context.error.validationErrorString``) that only AWS can make."""
        status, answer = self.call("POST", "/certificate", {"dsn": self.dsn, "publicKey": "x"})
        if status != 400 or not isinstance(answer, dict):
            raise SmokeFailed(
                f"POST /certificate with a typo: {status}, not a 400 with a JSON body (check "
                "BAD_REQUEST_BODY in template.yaml's GatewayResponses)"
            )
        message = str(answer.get("msg", ""))
        if answer.get("code") != "BAD_REQUEST_BODY" or "DSN" not in message:
            raise SmokeFailed(f"POST /certificate with a typo: {answer.get('code')}, {message!r}")
        self.say("smoke: a body with a typo is refused, naming the field (400 BAD_REQUEST_BODY)")

    def device_status(self) -> str:
        return str(self.expect("GET", f"/devices/{self.dsn}").get("status"))

    def revoke(self) -> None:
        if (status := self.device_status()) != "ACTIVE":
            raise SmokeFailed(f"GET /devices/{self.dsn}: status {status}, expected ACTIVE")
        self.expect("DELETE", f"/devices/{self.dsn}/certificate")
        if (status := self.device_status()) != "REVOKED":
            raise SmokeFailed(f"GET /devices/{self.dsn}: status {status} after DELETE, not REVOKED")
        self.say(f"smoke: device {self.dsn} was ACTIVE, now REVOKED")

    def run(self) -> None:
        password = self.create_member()
        self.sign_in(password)
        self.bad_body()
        self.provision()
        self.revoke()

    # ------------------------------------------------------------ clean-up

    def clean_up(self) -> list[str]:
        """Remove what this run made; what could not be removed, each with its command."""
        left: list[str] = []
        if self.device_provisioned and self.token:
            status = self._release()
            if status not in (200, 404):  # 404: the device never came to be
                left.append(f"release: DELETE /devices/{self.dsn} answered {status}")
        if self.device_provisioned:
            left += self._remove_iot()
            table = self.stack.output("DevicesTableName")
            try:
                self.stack.client("dynamodb").delete_item(
                    TableName=table, Key={"dsn": {"S": self.dsn}}
                )
            except (ClientError, BotoCoreError) as exc:
                left.append(
                    f"row {self.dsn} ({type(exc).__name__}): aws dynamodb delete-item "
                    f'--table-name {table} --key \'{{"dsn": {{"S": "{self.dsn}"}}}}\''
                )
        if self.user_created:
            pool = self.stack.output("UserPoolId")
            try:
                self.stack.client("cognito-idp").admin_delete_user(
                    UserPoolId=pool, Username=self.username
                )
            except (ClientError, BotoCoreError) as exc:
                left.append(
                    f"user {self.username} ({type(exc).__name__}): aws cognito-idp "
                    f"admin-delete-user --user-pool-id {pool} --username {self.username}"
                )
        for line in left:
            self.say(f"smoke: NOT cleaned up: {line}")
        if not left:
            self.say("smoke: cleaned up (user, thing, certificate, device row)")
        return left

    def _release(self) -> int:
        """DELETE /devices/{dsn}; while an interrupted request still holds the device (409
        REQUEST_IN_FLIGHT, its lease lasts about 30 s), wait and ask again."""
        deadline = time.monotonic() + RELEASE_WAIT_SECONDS
        while True:
            try:
                status, answer = self.call("DELETE", f"/devices/{self.dsn}")
            except SmokeFailed:
                return 0
            busy = isinstance(answer, dict) and answer.get("code") == "REQUEST_IN_FLIGHT"
            if status != 409 or not busy or time.monotonic() >= deadline:
                return status
            self.say("smoke: the device is busy (409 REQUEST_IN_FLIGHT); waiting to release it")
            time.sleep(RELEASE_RETRY_SECONDS)

    def _remove_iot(self) -> list[str]:
        iot = self.stack.client("iot")
        thing = self.thing_name or f"{self.stack.outputs.get('ThingPrefix', 'device')}_{self.dsn}"
        try:
            principals = _absent_ok(
                lambda: iot.list_thing_principals(thingName=thing).get("principals", []), []
            )
            for principal in principals:
                iot.detach_thing_principal(thingName=thing, principal=principal)
            certificates = {p.rsplit("/", 1)[-1] for p in principals}
            certificates |= {self.certificate_id} if self.certificate_id else set()
            for certificate_id in certificates:
                self._remove_certificate(iot, certificate_id)
            _absent_ok(lambda: iot.delete_thing(thingName=thing), None)
        except (ClientError, BotoCoreError) as exc:
            return [
                f"thing {thing} and its certificate ({type(exc).__name__}): aws iot "
                f"list-thing-principals --thing-name {thing}, then detach-thing-principal, "
                "delete-certificate --force-delete and delete-thing"
            ]
        return []

    @staticmethod
    def _remove_certificate(iot: Any, certificate_id: str) -> None:
        described = _absent_ok(lambda: iot.describe_certificate(certificateId=certificate_id), None)
        if described is None:
            return
        arn = described["certificateDescription"]["certificateArn"]
        for policy in iot.list_attached_policies(target=arn).get("policies", []):
            iot.detach_policy(policyName=policy["policyName"], target=arn)
        if described["certificateDescription"]["status"] == "ACTIVE":
            iot.update_certificate(certificateId=certificate_id, newStatus="INACTIVE")
        iot.delete_certificate(certificateId=certificate_id, forceDelete=True)


def _absent_ok(call: Callable[[], Any], default: Any) -> Any:
    """The call's answer; ``default`` if what it names is already gone."""
    try:
        return call()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return default
        raise


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.smoke",
        description=(
            "After a deploy: a member signs in, provisions one test device and revokes it; "
            "everything made is removed, also when a step fails."
        ),
    )
    deployed.add_options(parser)
    args = parser.parse_args(argv)
    try:
        stack = deployed.from_args(args)
    except deployed.StackError as exc:
        print(f"smoke: {exc}", file=sys.stderr)
        return 2
    smoke = Smoke(stack)
    failure: str | None = None
    try:
        smoke.run()
    except SmokeFailed as exc:
        failure = str(exc)
    except (ClientError, BotoCoreError, deployed.StackError) as exc:
        failure = f"{type(exc).__name__}: {exc}"
    except KeyboardInterrupt:
        print("smoke: interrupted; removing what it made", file=sys.stderr)
        failure = "interrupted"
    left = smoke.clean_up()
    if failure:
        print(f"smoke: FAILED: {failure}", file=sys.stderr)
        return 130 if failure == "interrupted" else 1
    if left:
        return 1
    print(f"smoke: passed on {stack.name} ({stack.region})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
