"""AWS Private CA: the certificate authority, its certificate, its activation."""

from __future__ import annotations

from typing import Any

from devstack.cloudformation.resources.base import Creator, DeployState, flag


def create_certificate_authority(
    state: DeployState, logical_id: str, kind: str, props: dict[str, Any]
) -> None:
    client = state.client("acm-pca")
    configuration = {
        key: props[key]
        for key in ("KeyAlgorithm", "SigningAlgorithm", "Subject", "CsrExtensions")
        if key in props
    }
    params: dict[str, Any] = {
        "CertificateAuthorityConfiguration": configuration,
        "CertificateAuthorityType": props["Type"],
        "IdempotencyToken": logical_id[:36],
    }
    for key in ("RevocationConfiguration", "KeyStorageSecurityStandard", "UsageMode", "Tags"):
        if key in props:
            params[key] = props[key]
    revocation = params.get("RevocationConfiguration", {})
    for section in ("OcspConfiguration", "CrlConfiguration"):
        if section in revocation and "Enabled" in revocation[section]:
            revocation[section]["Enabled"] = flag(revocation[section]["Enabled"])
    crl = revocation.get("CrlConfiguration", {})
    if "ExpirationInDays" in crl:
        crl["ExpirationInDays"] = int(crl["ExpirationInDays"])
    arn = client.create_certificate_authority(**params)["CertificateAuthorityArn"]
    csr = client.get_certificate_authority_csr(CertificateAuthorityArn=arn)["Csr"]
    state.done(logical_id, kind, arn, Arn=arn, CertificateSigningRequest=csr)


def issue_certificate(
    state: DeployState, logical_id: str, kind: str, props: dict[str, Any]
) -> None:
    client = state.client("acm-pca")
    validity = dict(props["Validity"])
    validity["Value"] = int(validity["Value"])
    params: dict[str, Any] = {
        "CertificateAuthorityArn": props["CertificateAuthorityArn"],
        "Csr": props["CertificateSigningRequest"].encode(),
        "SigningAlgorithm": props["SigningAlgorithm"],
        "Validity": validity,
        "IdempotencyToken": logical_id[:36],
    }
    for key in ("TemplateArn", "ApiPassthrough", "ValidityNotBefore"):
        if key in props:
            params[key] = props[key]
    arn = client.issue_certificate(**params)["CertificateArn"]
    # moto issues synchronously; the waiter also covers a real asynchronous issuance.
    client.get_waiter("certificate_issued").wait(
        CertificateAuthorityArn=props["CertificateAuthorityArn"],
        CertificateArn=arn,
        WaiterConfig={"Delay": 1, "MaxAttempts": 30},
    )
    certificate = client.get_certificate(
        CertificateAuthorityArn=props["CertificateAuthorityArn"], CertificateArn=arn
    )
    state.done(logical_id, kind, arn, Arn=arn, Certificate=certificate["Certificate"])


def activate(state: DeployState, logical_id: str, kind: str, props: dict[str, Any]) -> None:
    client = state.client("acm-pca")
    ca_arn = props["CertificateAuthorityArn"]
    params: dict[str, Any] = {
        "CertificateAuthorityArn": ca_arn,
        "Certificate": props["Certificate"].encode(),
    }
    if props.get("CertificateChain"):
        params["CertificateChain"] = props["CertificateChain"].encode()
    client.import_certificate_authority_certificate(**params)
    if props.get("Status", "ACTIVE") != "ACTIVE":
        client.update_certificate_authority(CertificateAuthorityArn=ca_arn, Status=props["Status"])
    chain = props["Certificate"] + (props.get("CertificateChain") or "")
    state.done(logical_id, kind, ca_arn, CompleteCertificateChain=chain)


CREATORS: dict[str, Creator] = {
    "AWS::ACMPCA::CertificateAuthority": create_certificate_authority,
    "AWS::ACMPCA::Certificate": issue_certificate,
    "AWS::ACMPCA::CertificateAuthorityActivation": activate,
}
