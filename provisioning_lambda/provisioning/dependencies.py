"""Build the adapters once per container and hand them to the domain.

Tests call `get_services.cache_clear()` after changing the environment, or build `Services`
themselves with moto-backed or failing adapters.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import boto3

from .adapters.allowlist import AllowlistStore
from .adapters.aws import make_client
from .adapters.challenges import ChallengeStore
from .adapters.fleet_store import FleetStore
from .adapters.iot import IotRegistry
from .adapters.iot_data import IotPublisher
from .adapters.pca import PrivateCa
from .config import Settings
from .ports import BudgetHolder, Services


@lru_cache(maxsize=1)
def get_services() -> Services:
    settings = Settings.from_env()
    session = boto3.session.Session()
    budgets = BudgetHolder()  # every client's attempts and retries fit the running request
    dynamodb = make_client("dynamodb", session, budgets.current)
    iot = IotRegistry(
        make_client("iot", session, budgets.current),
        policy_name=settings.iot_policy_name,
        thing_group=settings.thing_group,
        ca_mode=settings.ca_certificate_mode,
        arn_prefix=settings.iot_arn_prefix,
    )
    data_plane = IotPublisher(session, lambda: iot.data_endpoint, budgets.current)
    return Services(
        settings=settings,
        pca=PrivateCa(
            make_client("acm-pca", session, budgets.current),
            settings.ca_arn,
            settings.ca_signing_algorithm,
        ),
        iot=iot,
        store=FleetStore(  # the DeviceStore, plus lists, transfers and release
            dynamodb,
            settings.devices_table,
            settings.audit_table,
        ),
        executor=ThreadPoolExecutor(max_workers=8, thread_name_prefix="aws"),
        budgets=budgets,
        allowlist=AllowlistStore(dynamodb, settings.allowlist_table, settings.audit_table)
        if settings.allowlist_table
        else None,
        challenges=ChallengeStore(dynamodb, settings.allowlist_table)
        if settings.allowlist_table
        else None,
        # No call until the first publish (the renewal function) or disconnect (ending access).
        publisher=data_plane,
        connections=data_plane,
    )
