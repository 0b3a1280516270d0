"""Every parameter of template.yaml can change on a running stack without losing data.

The computation (tools.deploy_safety) reads the create-only properties from the resource
schemas cfn-lint ships and follows each parameter through the SAM-translated template. These
tests hold the template to it, keep docs/parameters.md equal to it, and check the computation
itself on small templates where the answer is known.
"""

from __future__ import annotations

import itertools
import textwrap
from pathlib import Path

import pytest

from tools.deploy_safety import (
    MUST_SURVIVE,
    TEMPLATE,
    Change,
    ParameterEffects,
    compute,
    generated_section,
    render,
    upgrade_problems,
    upgrade_steps,
    violations,
)

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "parameters.md"
CA_RESOURCES = {"CertificateAuthority", "CACertificate", "CAActivation"}


@pytest.fixture(scope="module")
def table() -> dict[str, ParameterEffects]:
    return {row.parameter: row for row in compute(TEMPLATE)}


def _touched(row: ParameterEffects) -> set[str]:
    return {effect.resource for effect in row.effects}


def test_no_parameter_replaces_a_table_or_the_user_pool_or_fails_the_update(
    table: dict[str, ParameterEffects],
) -> None:
    assert violations(list(table.values())) == []


@pytest.mark.parametrize("parameter", ["AdminEmail", "AdminUsername"])
def test_a_new_administrator_address_or_name_makes_a_new_administrator(
    table: dict[str, ParameterEffects], parameter: str
) -> None:
    # Every property of a Cognito user is create-only: the change must replace the user under a
    # new name (CloudFormation creates the new one first), never fail on the old name.
    assert {e.resource for e in table[parameter].of(Change.REPLACE)} >= {"AdminUser"}
    assert table[parameter].of(Change.FAIL) == []


def test_the_parameter_table_in_the_docs_is_the_computed_one(
    table: dict[str, ParameterEffects],
) -> None:
    documented = generated_section(DOC.read_text(encoding="utf-8"))

    assert documented, f"{DOC} lost its generated table"
    assert documented == render(list(table.values())), (
        "docs/parameters.md is stale: run "
        ".venv/bin/python -m tools.deploy_safety --write docs/parameters.md"
    )


def test_the_readme_links_the_parameter_table() -> None:
    assert "docs/parameters.md" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_device_subject_and_function_settings_never_touch_the_ca(
    table: dict[str, ParameterEffects],
) -> None:
    for name, row in table.items():
        if name.startswith("Device") or name.startswith("Api") or name == "ThingPrefix":
            assert not _touched(row) & CA_RESOURCES, name


@pytest.mark.parametrize(
    "parameter",
    [
        "CaKeyAlgorithm",
        "IssuingCaCommonName",
        "CaOrganization",
        "CaOrganizationalUnit",
        "CaCountry",
        "CaUsageMode",
    ],
)
def test_an_issuing_ca_parameter_is_a_rotation_that_keeps_the_old_ca(
    table: dict[str, ParameterEffects], parameter: str
) -> None:
    replaced = {e.resource: e for e in table[parameter].of(Change.REPLACE)}

    assert replaced["IssuingCertificateAuthority"].retained
    assert replaced["IssuingCAActivation"].retained
    # The custom resource sees the new issuing CA and registers it with AWS IoT.
    assert "CaRegistration" in {e.resource for e in table[parameter].of(Change.UPDATE)}
    assert "docs/runbook-ca-rotation.md" in render([table[parameter]])


def test_the_roots_name_makes_a_new_root_that_signs_the_same_issuing_ca_again(
    table: dict[str, ParameterEffects],
) -> None:
    row = table["CaCommonName"]
    replaced = {e.resource: e for e in row.of(Change.REPLACE)}
    # A new root, the old one kept; the issuing CA (and its IoT registration) stays, its
    # certificate signed again by the new root: devices pinning the old root would refuse it.
    assert replaced["CertificateAuthority"].retained
    assert replaced["CAActivation"].retained
    assert "IssuingCACertificate" in replaced
    assert "IssuingCertificateAuthority" not in replaced
    assert "CaRegistration" not in _touched(row)
    assert "refuse" in render([row])


def test_ca_validity_reissues_the_root_certificate_without_telling_iot(
    table: dict[str, ParameterEffects],
) -> None:
    # The documented decision: CaValidityYears is read when the CA is created; a later change
    # re-issues the CA certificate, which the IoT registration does not follow.
    row = table["CaValidityYears"]

    assert {e.resource for e in row.of(Change.REPLACE)} == {"CACertificate"}
    assert "CertificateAuthority" not in _touched(row)
    assert "CaRegistration" not in _touched(row)
    assert "docs/runbook-ca-rotation.md" in render([row])


# ---------------------------------------------------------------- the computation itself


def _effects(tmp_path: Path, body: str, parameter: str) -> dict[str, Change]:
    path = tmp_path / "template.yaml"
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    (row,) = [r for r in compute(path) if r.parameter == parameter]
    return {e.resource: e.change for e in row.effects}


def test_a_create_only_property_replaces_and_the_replacement_propagates(
    tmp_path: Path,
) -> None:
    effects = _effects(
        tmp_path,
        """
        Parameters:
          Partition:
            Type: String
            Default: a
        Resources:
          Table:
            Type: AWS::DynamoDB::Table
            Properties:
              KeySchema: [{AttributeName: pk, KeyType: HASH}]
              AttributeDefinitions: [{AttributeName: pk, AttributeType: S}]
              BillingMode: PAY_PER_REQUEST
              ImportSourceSpecification:
                InputFormat: CSV
                S3BucketSource: {S3Bucket: !Sub "bucket-${Partition}"}
          Group:
            Type: AWS::Logs::LogGroup
            Properties:
              LogGroupName: !Sub "/x/${Table}"
          Retention:
            Type: AWS::Logs::LogGroup
            Properties:
              RetentionInDays: !If [IsA, 1, 3]
        Conditions:
          IsA: !Equals [!Ref Partition, a]
        """,
        "Partition",
    )

    assert effects == {
        "Table": Change.REPLACE,
        "Group": Change.REPLACE,  # its name reads the replaced table's name
        "Retention": Change.UPDATE,  # through the condition
    }
    assert "AWS::DynamoDB::Table" in MUST_SURVIVE


def test_replacing_a_user_under_the_same_username_fails(tmp_path: Path) -> None:
    template = """
        Parameters:
          Email:
            Type: String
            Default: a@example.com
          Name:
            Type: String
            Default: admin
        Resources:
          Pool:
            Type: AWS::Cognito::UserPool
          User:
            Type: AWS::Cognito::UserPoolUser
            Properties:
              UserPoolId: !Ref Pool
              Username: !Ref Name
              UserAttributes: [{Name: email, Value: !Ref Email}]
        """

    assert _effects(tmp_path, template, "Email") == {"User": Change.FAIL}
    assert _effects(tmp_path, template, "Name") == {"User": Change.REPLACE}


# ---------------------------------------------------------------- table indexes

_TWO_INDEXES = """
    Parameters:
      Indexes:
        Type: String
        Default: one
        AllowedValues: [one, three]
    Conditions:
      Three: !Equals [!Ref Indexes, three]
    Resources:
      DevicesTable:
        Type: AWS::DynamoDB::Table
        Properties:
          BillingMode: PAY_PER_REQUEST
          KeySchema: [{AttributeName: pk, KeyType: HASH}]
          AttributeDefinitions: [{AttributeName: pk, AttributeType: S}]
          GlobalSecondaryIndexes:
            - {IndexName: SweepIndex, KeySchema: [{AttributeName: pk, KeyType: HASH}],
               Projection: {ProjectionType: KEYS_ONLY}}
            - !If
              - Three
              - {IndexName: A, KeySchema: [{AttributeName: pk, KeyType: HASH}],
                 Projection: {ProjectionType: KEYS_ONLY}}
              - !Ref AWS::NoValue
            - !If
              - Three
              - {IndexName: B, KeySchema: [{AttributeName: pk, KeyType: HASH}],
                 Projection: {ProjectionType: KEYS_ONLY}}
              - !Ref AWS::NoValue
      AuditTable:
        Type: AWS::DynamoDB::Table
        Properties:
          BillingMode: PAY_PER_REQUEST
          KeySchema: [{AttributeName: pk, KeyType: HASH}]
          AttributeDefinitions: [{AttributeName: pk, AttributeType: S}]
"""


def test_an_update_that_adds_two_indexes_to_a_table_fails(tmp_path: Path) -> None:
    # DynamoDB creates or deletes one global secondary index per UpdateTable call, and
    # CloudFormation makes one per table update: two at once roll the update back.
    assert _effects(tmp_path, _TWO_INDEXES, "Indexes") == {"DevicesTable": Change.FAIL}


def test_an_upgrade_that_adds_two_indexes_at_once_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    path.write_text(
        textwrap.dedent(_TWO_INDEXES).replace("Default: one", "Default: three"), encoding="utf-8"
    )

    (problem,) = upgrade_problems(path)
    assert "DevicesTable changes 2 indexes (A, B)" in problem


def test_a_stack_of_the_last_release_reaches_the_templates_indexes_one_per_deploy() -> None:
    steps = upgrade_steps(TEMPLATE)

    assert upgrade_problems(TEMPLATE) == []
    for (_, before), (_, after) in itertools.pairwise(steps):
        for table, indexes in after.items():
            assert len(set(before[table]) ^ set(indexes)) <= 1, (table, before, after)
    # The last step is the template as a new stack gets it: every index of this release.
    final = steps[-1][1]["DevicesTable"]
    assert set(final) == {"SweepIndex", "ExpiryIndex", "OwnerIndex", "StatusIndex"}
    assert steps[-1][0] == "complete"


@pytest.mark.parametrize(
    ("step", "indexes"),
    [
        ("1", {"SweepIndex", "ExpiryIndex"}),
        ("2", {"SweepIndex", "ExpiryIndex", "OwnerIndex"}),
        ("complete", {"SweepIndex", "ExpiryIndex", "OwnerIndex", "StatusIndex"}),
    ],
)
def test_each_upgrade_step_is_a_table_dynamodb_accepts(step: str, indexes: set[str]) -> None:
    # DynamoDB refuses an attribute definition no key uses: each step's definitions must be
    # exactly its indexes' keys (moto checks this as DynamoDB does).
    import boto3
    from moto import mock_aws

    from devstack.cloudformation.intrinsics import Resolver
    from devstack.cloudformation.template import load_yaml
    from tools.deploy_safety import _defaults, _translate

    values = {**_defaults(load_yaml(TEMPLATE)), "IndexUpgradeStep": step}
    template = _translate(TEMPLATE, values)
    resolver = Resolver(
        ref=lambda ref: values.get(ref, ref),
        getatt=lambda logical_id, attribute: f"{logical_id}.{attribute}",
        conditions=template["Conditions"],
    )
    props = resolver.resolve(template["Resources"]["DevicesTable"]["Properties"])
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(
            TableName="devices",
            BillingMode=props["BillingMode"],
            KeySchema=props["KeySchema"],
            AttributeDefinitions=props["AttributeDefinitions"],
            GlobalSecondaryIndexes=props["GlobalSecondaryIndexes"],
        )
        table = client.describe_table(TableName="devices")["Table"]
    assert {index["IndexName"] for index in table["GlobalSecondaryIndexes"]} == indexes
