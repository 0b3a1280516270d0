"""Shared fixtures for the integration tests: the stack from template.yaml, on moto's mock.

``stack`` deploys template.yaml with the local deployer (devstack.cloudformation.deployer) inside
``mock_aws()``, exactly as the offline stack does against a moto server: same resources, same
generated names, the CA-registration custom resource run through its real handler.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from devstack.cloudformation.deployer import Deployment, deploy
from provisioning.adapters.composition import get_services
from provisioning.ports import Services

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
CUSTOM_RESOURCE_HANDLER = ROOT / "deployment_lambda" / "ca_registration" / "handler.py"
STACK_PARAMETERS = {"AdminEmail": "admin@example.com"}


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and region; no endpoint override, so boto3 goes to moto's mock."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def stack(aws_env: None) -> Iterator[Deployment]:
    """A fresh deployment of template.yaml per test, inside ``mock_aws()``.

    Yields a ``Deployment``: ``.outputs`` (template Output name -> value), ``.functions``
    (logical ID -> FunctionSpec with the resolved environment), ``.api``, ``.admin_username``
    and ``.admin_password``. The custom resource runs only once its handler exists.
    """
    with mock_aws():
        yield deploy(
            TEMPLATE,
            STACK_PARAMETERS,
            run_custom_resources=CUSTOM_RESOURCE_HANDLER.exists(),
        )


@pytest.fixture
def provisioning_env(stack: Deployment, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """os.environ as the provisioning function sees it in this stack; returns that mapping."""
    environment = stack.functions["ProvisioningFunction"].environment
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    return dict(environment)


@pytest.fixture
def services(provisioning_env: dict[str, str]) -> Iterator[Services]:
    """The provisioning function's services, built afresh on this stack (a cold container).

    Polling delays are asserted, not waited for: ``sleep`` does nothing.
    """
    get_services.cache_clear()
    built = get_services()
    built.sleep = lambda _seconds: None
    yield built
    get_services.cache_clear()


@pytest.fixture
def aws(provisioning_env: dict[str, str]) -> dict[str, Any]:
    """Clients of this stack's IoT, DynamoDB and ACM PCA, to look at what the function did."""
    return {name: boto3.client(name) for name in ("iot", "dynamodb", "acm-pca")}
