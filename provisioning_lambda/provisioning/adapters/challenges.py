"""DynamoDB: attestation challenges, as items of the allowlist table (challenge.py).

A challenge is the item ``<dsn>#challenge#<hex of its 32 bytes>``: the DSN is part of the key, so
a challenge can only ever be found for the DSN it was issued for (a DSN never holds ``#``, so
these items never meet a DSN's own item or its certified keys). The item carries the caller's
``sub``, ``expires_at`` (epoch seconds, the table's TTL attribute: DynamoDB deletes the item some
time after, so expiry is checked here, never left to the TTL) and, once consumed, ``used_at`` and
the consuming request's id.

Consuming is one conditional UpdateItem: the item exists, is the caller's, has not expired and
has not been used by another request. Two requests with one challenge: one write wins. The
write is safe to repeat (botocore repeats a write whose answer was lost): the same request id
consumes its own challenge again. When the condition fails, the item it saw
(``ReturnValuesOnConditionCheckFailure``) says why, without a second read.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from provisioning.adapters.aws import aws_step, error_code
from provisioning.domain.challenge import Consumed

CHALLENGE_MARK = "#challenge#"


def challenge_item_id(dsn: str, challenge: bytes) -> str:
    return f"{dsn}{CHALLENGE_MARK}{challenge.hex()}"


class ChallengeStore:
    def __init__(self, client: Any, table: str) -> None:
        self.client = client
        self._table = table

    def put_challenge(
        self, dsn: str, challenge: bytes, caller_sub: str, expires_at: int, at: str
    ) -> None:
        # 32 random bytes: a new key every time, so the put needs no condition and is safe to
        # repeat.
        with aws_step("STORE_CHALLENGE"):
            self.client.put_item(
                TableName=self._table,
                Item={
                    "dsn": {"S": challenge_item_id(dsn, challenge)},
                    "caller_sub": {"S": caller_sub},
                    "expires_at": {"N": str(expires_at)},
                    "created_at": {"S": at},
                },
            )

    def consume_challenge(
        self, dsn: str, challenge: bytes, caller_sub: str, now: int, at: str, request_id: str
    ) -> Consumed:
        with aws_step("CONSUME_CHALLENGE"):
            try:
                self.client.update_item(
                    TableName=self._table,
                    Key={"dsn": {"S": challenge_item_id(dsn, challenge)}},
                    UpdateExpression="SET used_at = :at, used_by = :request",
                    ConditionExpression="attribute_exists(dsn) AND caller_sub = :sub "
                    "AND expires_at > :now "
                    "AND (attribute_not_exists(used_by) OR used_by = :request)",
                    ExpressionAttributeValues={
                        ":at": {"S": at},
                        ":request": {"S": request_id},
                        ":sub": {"S": caller_sub},
                        ":now": {"N": str(now)},
                    },
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
            except ClientError as error:
                if error_code(error) != "ConditionalCheckFailedException":
                    raise
                return _why(error.response.get("Item"), caller_sub, now)
        return Consumed.OK


def _why(item: dict[str, Any] | None, caller_sub: str, now: int) -> Consumed:
    if not item:
        return Consumed.UNKNOWN
    if item.get("caller_sub", {}).get("S") != caller_sub:
        return Consumed.NOT_YOURS
    if "used_by" in item:
        return Consumed.USED
    if int(item.get("expires_at", {}).get("N", "0")) <= now:
        return Consumed.EXPIRED
    return Consumed.UNKNOWN  # not reached: every clause of the condition is named above
