"""devstack.moto_bridges.gaps: the account's IoT data endpoint that DescribeEndpoint names is
stable, as AWS's is, and moto's in-process mock routes it to iot-data, never to another service's
mock (a random id containing "s3" used to reach moto's S3 mock and fail a renewal test)."""

from __future__ import annotations

import boto3
from moto import backend_index, mock_aws

from devstack.moto_bridges.gaps import endpoint_id


def routed_to(url: str) -> str:
    """The service moto's in-process mock serves a URL with: the first pattern that matches,
    as its request stubber picks it."""
    for service, pattern in backend_index.backend_url_patterns:
        if pattern.match(url):
            return service
    return ""


def test_the_routing_this_relies_on_sends_an_s3_looking_host_to_s3() -> None:
    # The hazard itself: moto's S3 patterns take any host with "s3" in it.
    assert routed_to("https://ab3s3xyz-ats.iot.us-east-1.amazonaws.com/topics/t") == "s3"


def test_describe_endpoint_is_stable_and_routes_to_iot_data() -> None:
    with mock_aws():
        iot = boto3.client("iot", region_name="eu-west-1")
        addresses = {
            iot.describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"] for _ in range(50)
        }
        (address,) = addresses
        assert address.endswith("-ats.iot.eu-west-1.amazonaws.com")
        assert routed_to(f"https://{address}/topics/things/x") == "iotdata"


def test_no_account_or_region_gets_an_id_another_service_would_take() -> None:
    regions = ["us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-2"]
    for account in range(2000):
        for region in regions:
            ident = endpoint_id(f"{account:012d}", region)
            url = f"https://{ident}-ats.iot.{region}.amazonaws.com/topics/things/device_SN-1"
            assert routed_to(url) == "iotdata", ident
