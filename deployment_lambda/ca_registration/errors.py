"""Domain exceptions: plain classes the adapters raise and the service understands.

Their messages end up in the ``Reason`` CloudFormation shows an operator, so they are short
and never carry key material, pre-signed URLs or registration codes.
"""


class CaRegistrationError(Exception):
    """Base class: anything that makes the custom resource answer FAILED."""


class InvalidProperties(CaRegistrationError):
    """The resource properties are not what the template contract says."""


class DeadlineExceeded(CaRegistrationError):
    """A bounded wait ran out of the Lambda's remaining time."""


class PcaNotUsable(CaRegistrationError):
    """The Private CA is in a state it will not leave on its own (FAILED, DISABLED, ...)."""


class StillIssuing(CaRegistrationError):
    """ACM PCA has not finished issuing the certificate yet (RequestInProgressException)."""


class NotFound(CaRegistrationError):
    """The IoT CA certificate (or PCA) does not exist."""


class AlreadyRegistered(CaRegistrationError):
    """IoT already holds this CA certificate; ``certificate_id`` names it when IoT said so."""

    def __init__(self, certificate_id: str | None) -> None:
        super().__init__("CA certificate already registered with AWS IoT")
        self.certificate_id = certificate_id


class DeleteRefused(CaRegistrationError):
    """IoT refused to delete the CA certificate (state or registered certificates)."""


class AuditFailed(CaRegistrationError):
    """The audit record could not be written."""
