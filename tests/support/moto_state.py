"""What moto's DynamoDB holds, read from its backend rather than through a request.

The crash-safety matrix and the lifecycle model check the device's row after every step (the
lifecycle model, after every rule, for every device): through boto3, each look costs a request's
serialising and parsing on both sides, about a third of the model's time. The row is the
one moto's GetItem would answer (the same attribute values, in the same wire form), as the
checks already read IoT's and ACM PCA's state from moto's backends.
"""

from __future__ import annotations

from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.dynamodb.models import dynamodb_backends
from moto.dynamodb.models.dynamo_type import DynamoType

REGION = "us-east-1"


def stored_item(table_name: str, key: dict[str, dict[str, str]]) -> dict[str, Any]:
    """The item under ``key`` (``{"dsn": {"S": ...}}``) as GetItem answers it; {} if none."""
    table = dynamodb_backends[DEFAULT_ACCOUNT_ID][REGION].get_table(table_name)
    hash_value = DynamoType(key[table.hash_key_attr])
    range_value = DynamoType(key[table.range_key_attr]) if table.range_key_attr else None
    item = table.get_item(hash_value, range_value)
    return {} if item is None else dict(item.to_json()["Attributes"])
