"""Domain errors. Each carries the HTTP status and the stable code the API answers with.

Messages are human sentences written here: they never echo key material, tokens, ARNs or
the text of an AWS error, so nothing sensitive can leak through an error body.
"""


class ProvisioningError(Exception):
    status = 500
    code = "INTERNAL_ERROR"
    # Seconds a client should wait before retrying (the Retry-After header); 0: no header.
    retry_after_seconds = 0

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def log_fields(self) -> dict[str, str | int]:
        """What the log line of a refusal says about it (never the message's data)."""
        return {"code": self.code, "status": self.status}


class BadRequest(ProvisioningError):
    status = 400
    code = "BAD_REQUEST"


class Forbidden(ProvisioningError):
    status = 403
    code = "FORBIDDEN"


class NotFound(ProvisioningError):
    """Also what a caller gets for another user's device: its existence is not disclosed."""

    status = 404
    code = "DEVICE_NOT_FOUND"


class Conflict(ProvisioningError):
    status = 409
    code = "CONFLICT"

    def __init__(self, message: str, code: str | None = None, retry_after: int = 0) -> None:
        super().__init__(message, code)
        self.retry_after_seconds = max(0, retry_after)


class LeaseLost(Conflict):
    """The device's lease is no longer this request's: another request took it over (this one
    outlived its lease). The row, and the certificate it names, are now that request's."""

    def __init__(self) -> None:
        super().__init__("Another request took over this device; retry.", "REQUEST_IN_FLIGHT", 1)


class DependencyFailed(ProvisioningError):
    """An AWS call failed after its retries; `step` names it in the stable code."""

    status = 502

    def __init__(
        self, step: str, message: str | None = None, *, operation: str = "", aws_error: str = ""
    ) -> None:
        super().__init__(
            message or f"The {step.replace('_', ' ').lower()} step failed; retry later.",
            code=f"{step}_FAILED",
        )
        self.step = step
        # For the log only (never the answer): the AWS operation and its error code, e.g.
        # RevokeCertificate / RequestFailedException; never the error's text.
        self.operation = operation
        self.aws_error = aws_error

    def log_fields(self) -> dict[str, str | int]:
        fields = super().log_fields()
        fields.update(aws_operation=self.operation or "-", aws_error=self.aws_error or "-")
        return fields


class Throttled(ProvisioningError):
    """An AWS quota throttled us past the retry budget: the client should slow down."""

    status = 429
    code = "THROTTLED"
    retry_after_seconds = 2

    def __init__(self, step: str) -> None:
        super().__init__(f"Too many requests reached AWS during the {step.lower()} step.")
        self.step = step


class OutcomeUnknown(DependencyFailed):
    """A write's outcome could not be learnt (no answer, and reading back failed too).

    Nothing is undone after it: the device row's intent says what the request was doing, and
    the next request for the device or the sweeper finishes or undoes it.
    """

    def __init__(self, step: str) -> None:
        super().__init__(step, f"The {step.replace('_', ' ').lower()} step did not answer; retry.")


class OutOfTime(ProvisioningError):
    """The remaining Lambda time cannot cover the next step and a clean rollback."""

    status = 502

    def __init__(self, step: str) -> None:
        super().__init__(
            f"The request ran out of time before the {step.lower()} step; retry later.",
            code=f"{step}_TIMEOUT",
        )
        self.step = step
