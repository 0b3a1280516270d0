"""moto's IoT registry, with keyed lookups in place of its scans, answers as before: things,
certificates and attachments found, refused and forgotten as the product's calls need."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import boto3
import pytest
from botocore.exceptions import ClientError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from moto import mock_aws

from bench.moto_patches import lookups
from bench.moto_patches.lookups import PairIndex

REGION = "us-east-1"


@pytest.fixture(autouse=True, scope="module")
def keyed_lookups() -> None:
    """The patch under test; only bench.load applies it otherwise (for the rest of the process,
    as there)."""
    lookups.apply()


@pytest.fixture
def iot():  # type: ignore[no-untyped-def]
    with mock_aws():
        client = boto3.client("iot", region_name=REGION)
        client.create_policy(
            policyName="p", policyDocument='{"Version":"2012-10-17","Statement":[]}'
        )
        yield client


def self_signed_certificate_pem(name: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _register(iot, name: str) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    answer = iot.register_certificate_without_ca(
        certificatePem=self_signed_certificate_pem(name), status="ACTIVE"
    )
    return answer["certificateId"], answer["certificateArn"]


def _code(error: pytest.ExceptionInfo[ClientError]) -> str:
    return str(error.value.response["Error"]["Code"])


def test_things_are_found_by_name_and_unknown_names_refused(iot) -> None:  # type: ignore[no-untyped-def]
    for name in ("dev_a", "dev_b", "dev_a1"):
        iot.create_thing(thingName=name)

    assert iot.describe_thing(thingName="dev_a")["thingName"] == "dev_a"
    assert iot.describe_thing(thingName="dev_a1")["thingName"] == "dev_a1"
    with pytest.raises(ClientError) as error:
        iot.describe_thing(thingName="dev_c")
    assert _code(error) == "ResourceNotFoundException"


def test_attachments_are_listed_per_thing_and_per_certificate(iot) -> None:  # type: ignore[no-untyped-def]
    iot.create_thing(thingName="dev_a")
    iot.create_thing(thingName="dev_b")
    _, arn_1 = _register(iot, "one")
    _, arn_2 = _register(iot, "two")
    iot.attach_thing_principal(thingName="dev_a", principal=arn_1)
    iot.attach_thing_principal(thingName="dev_a", principal=arn_2)
    iot.attach_thing_principal(thingName="dev_b", principal=arn_2)
    iot.attach_policy(policyName="p", target=arn_1)

    assert sorted(iot.list_thing_principals(thingName="dev_a")["principals"]) == sorted(
        [arn_1, arn_2]
    )
    assert iot.list_thing_principals(thingName="dev_b")["principals"] == [arn_2]
    assert sorted(iot.list_principal_things(principal=arn_2)["things"]) == ["dev_a", "dev_b"]
    assert [p["policyName"] for p in iot.list_attached_policies(target=arn_1)["policies"]] == ["p"]
    assert iot.list_attached_policies(target=arn_2)["policies"] == []

    iot.detach_thing_principal(thingName="dev_a", principal=arn_2)
    iot.detach_policy(policyName="p", target=arn_1)
    assert iot.list_thing_principals(thingName="dev_a")["principals"] == [arn_1]
    assert iot.list_principal_things(principal=arn_2)["things"] == ["dev_b"]
    assert iot.list_attached_policies(target=arn_1)["policies"] == []

    with pytest.raises(ClientError) as error:
        iot.list_thing_principals(thingName="nobody")
    assert _code(error) == "ResourceNotFoundException"


def test_certificates_are_found_by_id_and_arn(iot) -> None:  # type: ignore[no-untyped-def]
    certificate_id, arn = _register(iot, "one")
    iot.create_thing(thingName="dev_a")

    iot.update_certificate(certificateId=certificate_id, newStatus="INACTIVE")
    assert (
        iot.describe_certificate(certificateId=certificate_id)["certificateDescription"]["status"]
        == "INACTIVE"
    )
    with pytest.raises(ClientError) as error:
        iot.describe_certificate(certificateId="0" * 64)
    assert _code(error) == "ResourceNotFoundException"
    unknown_arn = arn.rsplit("/", 1)[0] + "/" + "0" * 64
    with pytest.raises(ClientError) as error:
        iot.attach_thing_principal(thingName="dev_a", principal=unknown_arn)
    assert _code(error) == "ResourceNotFoundException"


def test_a_thing_with_a_certificate_attached_cannot_be_deleted(iot) -> None:  # type: ignore[no-untyped-def]
    iot.create_thing(thingName="dev_a")
    _, arn = _register(iot, "one")
    iot.attach_thing_principal(thingName="dev_a", principal=arn)

    with pytest.raises(ClientError) as error:
        iot.delete_thing(thingName="dev_a")
    assert _code(error) == "InvalidRequestException"

    iot.detach_thing_principal(thingName="dev_a", principal=arn)
    iot.delete_thing(thingName="dev_a")
    with pytest.raises(ClientError):
        iot.describe_thing(thingName="dev_a")


def test_the_pair_index_forgets_what_is_deleted() -> None:
    index = PairIndex([(("c1", "t1"), 1), (("c1", "t2"), 2)])
    index[("c2", "t1")] = 3
    del index[("c1", "t1")]
    assert index.pop(("c1", "t2")) == 2
    assert index.pop(("c1", "t2"), None) is None

    assert index.with_first("c1") == []
    assert index.with_second("t1") == [("c2", "t1")]
    assert dict(index) == {("c2", "t1"): 3}
