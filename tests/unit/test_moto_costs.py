"""moto without its repeated work (bench.moto_patches.costs) answers as before: a cancelled
transaction leaves every table as it was, a committed one applies every write, the CA signs
what it signed, each request reaches the service it names. And a transaction's backup no longer
grows with the table."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding
from moto import mock_aws
from moto.dynamodb.models.dynamo_type import Item
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

from bench.moto_patches import costs

REGION = "us-east-1"


@pytest.fixture(autouse=True, scope="module")
def without_repeated_work() -> None:
    """The patches under test; bench.load applies them otherwise, and so does every test
    process (tests/support/once.py), for the rest of the process."""
    costs.apply()


@pytest.fixture
def dynamodb() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("dynamodb", region_name=REGION)
        client.create_table(
            TableName="devices",
            KeySchema=[{"AttributeName": "dsn", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "dsn", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        client.create_table(
            TableName="audit",
            KeySchema=[
                {"AttributeName": "dsn", "KeyType": "HASH"},
                {"AttributeName": "at", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "dsn", "AttributeType": "S"},
                {"AttributeName": "at", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        client.put_item(TableName="devices", Item={"dsn": {"S": "A"}, "n": {"N": "1"}})
        client.put_item(TableName="devices", Item={"dsn": {"S": "KEEP"}, "n": {"N": "7"}})
        client.put_item(TableName="audit", Item={"dsn": {"S": "A"}, "at": {"S": "1"}})
        yield client


def everything(client: Any) -> dict[str, list[dict[str, Any]]]:
    return {
        table: sorted(client.scan(TableName=table)["Items"], key=repr)
        for table in ("devices", "audit")
    }


def writes_then(last: dict[str, Any]) -> list[dict[str, Any]]:
    """An update, a put and a delete on both kinds of table, then ``last``."""
    return [
        {
            "Update": {
                "TableName": "devices",
                "Key": {"dsn": {"S": "A"}},
                "UpdateExpression": "SET n = :n, added = :n",
                "ExpressionAttributeValues": {":n": {"N": "2"}},
            }
        },
        {"Put": {"TableName": "devices", "Item": {"dsn": {"S": "NEW"}}}},
        {"Delete": {"TableName": "audit", "Key": {"dsn": {"S": "A"}, "at": {"S": "1"}}}},
        {"Put": {"TableName": "audit", "Item": {"dsn": {"S": "A"}, "at": {"S": "2"}}}},
        last,
    ]


FAILING_CHECK = {
    "ConditionCheck": {
        "TableName": "devices",
        "Key": {"dsn": {"S": "KEEP"}},
        "ConditionExpression": "n = :other",
        "ExpressionAttributeValues": {":other": {"N": "8"}},
    }
}


def test_a_cancelled_transaction_leaves_every_item_as_it_was(dynamodb: Any) -> None:
    before = everything(dynamodb)
    with pytest.raises(ClientError) as error:
        dynamodb.transact_write_items(TransactItems=writes_then(FAILING_CHECK))
    assert error.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert everything(dynamodb) == before


def test_a_transaction_naming_one_item_twice_is_refused_and_changes_nothing(
    dynamodb: Any,
) -> None:
    before = everything(dynamodb)
    again = {"Put": {"TableName": "devices", "Item": {"dsn": {"S": "A"}}}}
    with pytest.raises(ClientError) as error:
        dynamodb.transact_write_items(TransactItems=writes_then(again))
    assert error.value.response["Error"]["Code"] == "ValidationException"
    assert everything(dynamodb) == before


def test_a_committed_transaction_applies_every_write(dynamodb: Any) -> None:
    passing = {
        **FAILING_CHECK["ConditionCheck"],
        "ExpressionAttributeValues": {":other": {"N": "7"}},
    }
    dynamodb.transact_write_items(TransactItems=writes_then({"ConditionCheck": passing}))
    devices = {item["dsn"]["S"]: item for item in everything(dynamodb)["devices"]}
    assert devices["A"] == {"dsn": {"S": "A"}, "n": {"N": "2"}, "added": {"N": "2"}}
    assert set(devices) == {"A", "KEEP", "NEW"}
    assert everything(dynamodb)["audit"] == [{"dsn": {"S": "A"}, "at": {"S": "2"}}]


def test_a_transaction_copies_the_items_it_names_not_the_table(
    dynamodb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a table of 300 items
    for n in range(300):
        dynamodb.put_item(TableName="devices", Item={"dsn": {"S": f"D{n}"}})
    copied: list[Item] = []
    original = Item.__deepcopy__

    def counting(self: Item, memo: dict[int, Any]) -> Item:
        copied.append(self)
        return original(self, memo)

    monkeypatch.setattr(Item, "__deepcopy__", counting)
    # WHEN a transaction of five writes is cancelled
    with pytest.raises(ClientError):
        dynamodb.transact_write_items(TransactItems=writes_then(FAILING_CHECK))
    # THEN items were copied a few times (the three it names that exist, and the updated one
    # by moto's update), not once for each of the table's 300, and all are back
    assert 3 <= len(copied) <= 5
    assert dynamodb.get_item(TableName="devices", Key={"dsn": {"S": "A"}})["Item"]["n"] == {
        "N": "1"
    }


def test_the_ca_signs_with_its_own_key_every_time() -> None:
    with mock_aws():
        pca = boto3.client("acm-pca", region_name=REGION)
        arn = pca.create_certificate_authority(
            CertificateAuthorityConfiguration={
                "KeyAlgorithm": "RSA_2048",
                "SigningAlgorithm": "SHA256WITHRSA",
                "Subject": {"CommonName": "test CA"},
            },
            CertificateAuthorityType="ROOT",
        )["CertificateAuthorityArn"]
        ca_csr = pca.get_certificate_authority_csr(CertificateAuthorityArn=arn)["Csr"]
        ca_public_key = x509.load_pem_x509_csr(ca_csr.encode()).public_key()
        issued = [
            pca.issue_certificate(
                CertificateAuthorityArn=arn,
                Csr=ca_csr.encode(),
                SigningAlgorithm="SHA256WITHRSA",
                Validity={"Value": 1, "Type": "DAYS"},
            )["CertificateArn"]
            for _ in range(2)
        ]
        for certificate_arn in issued:
            pem = pca.get_certificate(CertificateAuthorityArn=arn, CertificateArn=certificate_arn)
            certificate = x509.load_pem_x509_certificate(pem["Certificate"].encode())
            ca_public_key.verify(  # type: ignore[union-attr,call-arg]
                certificate.signature,
                certificate.tbs_certificate_bytes,
                padding.PKCS1v15(),  # type: ignore[arg-type]
                certificate.signature_hash_algorithm,  # type: ignore[arg-type]
            )


@pytest.mark.parametrize(
    "host",
    [
        "iot.us-east-1.amazonaws.com",
        "acm-pca.eu-west-1.amazonaws.com",
        "dynamodb",
        "cognito-idp.us-east-1.amazonaws.com",
        "unknown.example",
        None,
    ],
)
def test_each_host_reaches_the_backend_it_did(host: str | None) -> None:
    application = DomainDispatcherApplication(create_backend_app)
    first = application.get_backend_for_host(host)
    assert application.get_backend_for_host(host) == first
    assert first == DomainDispatcherApplication.get_backend_for_host.__wrapped__(  # type: ignore[attr-defined]
        application, host
    )
