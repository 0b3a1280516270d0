"""One module per AWS service's resources; each maps resource types to a creator taking the
deployment's ``DeployState`` (base.py). ``CREATORS`` is all of them, by resource type."""

from __future__ import annotations

from devstack.cloudformation.resources import (
    acmpca,
    apigateway,
    cognito,
    dynamodb,
    iam,
    iot,
    iot_rules,
    lambda_,
    logs,
    sns,
)
from devstack.cloudformation.resources.base import Creator

CREATORS: dict[str, Creator] = {
    **dynamodb.CREATORS,
    **cognito.CREATORS,
    **acmpca.CREATORS,
    **iot.CREATORS,
    **iot_rules.CREATORS,
    **logs.CREATORS,
    **lambda_.CREATORS,
    **iam.CREATORS,
    **apigateway.CREATORS,
    **sns.CREATORS,
}
