"""The one composition root: build the adapters once per container, from the one validated
``Settings``, and hand them to the use cases (``get_services``; the expiry watch's bundle,
``get_watch_services``, is made from the same services).

Tests call `get_services.cache_clear()` after changing the environment, or build `Services`
themselves with moto-backed or failing adapters.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import boto3

from provisioning.adapters.allowlist import AllowlistStore
from provisioning.adapters.aws import make_client
from provisioning.adapters.challenges import ChallengeStore
from provisioning.adapters.fleet_store import FleetStore
from provisioning.adapters.iot import IotRegistry
from provisioning.adapters.iot_data import IotPublisher
from provisioning.adapters.pca import PrivateCa
from provisioning.adapters.sns import TopicNotifier
from provisioning.adapters.store import EXPIRY_SHARDS, DeviceStore
from provisioning.config import ConfigError, Settings
from provisioning.domain.expiry import ExpiryWindow
from provisioning.ports import BudgetHolder, Services, WatchServices


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


@lru_cache(maxsize=1)
def get_watch_services() -> WatchServices:
    """What the expiry watch needs: the same clients, the expiry index and the operators' topic."""
    services = get_services()
    settings = services.settings
    if not settings.expiry_topic_arn:
        raise ConfigError("environment variable EXPIRY_TOPIC_ARN is not set")
    if services.publisher is None:
        raise ConfigError("the expiry watch needs the iot-data publisher")
    if not isinstance(services.store, DeviceStore):
        raise ConfigError("the expiry watch reads the devices table's expiry index")
    return WatchServices(
        store=services.store,
        publisher=services.publisher,
        notifier=TopicNotifier(
            make_client("sns", boto3.session.Session(), services.budgets.current),
            settings.expiry_topic_arn,
        ),
        window=ExpiryWindow(settings.cert_validity_days, settings.expiry_warning_percent),
        shards=EXPIRY_SHARDS,
        thing_name=settings.thing_name,
        executor=services.executor,
        budgets=services.budgets,
        clock=services.clock,
        issuer_valid_until=services.pca.valid_until,
        root_valid_until=services.pca.root_valid_until,
    )
