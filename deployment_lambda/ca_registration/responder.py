"""The answer to CloudFormation: exactly one PUT per invocation, bounded, never logged in full.

The ResponseURL is a pre-signed S3 URL (a credential for one write): it is kept private here
and never reaches a log line, an exception message or a Reason.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from ca_registration.observability import logger

MAX_REASON = 1000  # the whole body must stay under CloudFormation's 4 KB
PUT_TIMEOUT_S = 3.0
PUT_ATTEMPTS = 3


@dataclass(frozen=True)
class Envelope:
    """Identifiers CloudFormation needs back, whatever the outcome."""

    stack_id: str
    request_id: str
    logical_resource_id: str


class Responder:
    """Sends at most one answer; the first caller (work or timeout watchdog) wins."""

    def __init__(self, response_url: str, envelope: Envelope) -> None:
        self.__url = response_url
        self._envelope = envelope
        self._lock = threading.Lock()
        self._claimed = False
        self.sent_status: str | None = None

    def __repr__(self) -> str:  # keep the URL out of any accidental repr/log
        return f"Responder(request_id={self._envelope.request_id!r})"

    @property
    def answered(self) -> bool:
        return self._claimed

    def send(
        self,
        status: str,
        physical_resource_id: str,
        data: dict[str, str] | None = None,
        reason: str | None = None,
    ) -> bool:
        """PUT the answer unless one was already sent; True if this call sent it."""
        with self._lock:
            if self._claimed:
                return False
            self._claimed = True
        body: dict[str, Any] = {
            "Status": status,
            "Reason": (reason or status)[:MAX_REASON],
            "PhysicalResourceId": physical_resource_id,
            "StackId": self._envelope.stack_id,
            "RequestId": self._envelope.request_id,
            "LogicalResourceId": self._envelope.logical_resource_id,
            "NoEcho": False,
            "Data": data or {},
        }
        self._put(json.dumps(body).encode())
        self.sent_status = status
        logger.info(
            "answered CloudFormation",
            extra={"status": status, "physical_resource_id": physical_resource_id},
        )
        return True

    def _put(self, payload: bytes) -> None:
        for attempt in range(1, PUT_ATTEMPTS + 1):
            request = urllib.request.Request(  # noqa: S310 - the URL is CloudFormation's (https)
                self.__url,
                data=payload,
                method="PUT",
                # CloudFormation's pre-signed URL is signed for an empty Content-Type.
                headers={"Content-Type": "", "Content-Length": str(len(payload))},
            )
            try:
                with urllib.request.urlopen(request, timeout=PUT_TIMEOUT_S) as response:  # noqa: S310
                    if 200 <= response.status < 300:
                        return
                    problem = f"HTTP {response.status}"
            except urllib.error.HTTPError as error:
                problem = f"HTTP {error.code}"
            except (urllib.error.URLError, OSError) as error:
                problem = type(error).__name__
            logger.warning("answer PUT failed", extra={"attempt": attempt, "problem": problem})
            if attempt < PUT_ATTEMPTS:
                time.sleep(0.5 * attempt)
        logger.error("could not answer CloudFormation", extra={"attempts": PUT_ATTEMPTS})
