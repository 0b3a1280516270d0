"""Kill a request between any two AWS calls, or lose an answer, the way production does.

``Crash`` watches every AWS call one request makes, across all of its clients, numbered in the
order they are made (the tests run the request's concurrent steps inline, so the order is the
same every time):

- ``die_before=k``: the process dies just before call k is sent;
- ``die_after=k``: call k reaches AWS and is answered, then the process dies;
- ``lose=k``: call k reaches AWS and applies, its answer is lost once; botocore retries it.

``Crash.points`` lists where one run of calls can fail, for a test to try each in turn.

Death is a ``ProcessDeath`` (a BaseException, as a SIGKILL would be to Python code: no
``except Exception`` clean-up runs) raised at that point and at every call after it, so nothing
after the death reaches AWS, the rollback included.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ConnectionClosedError

WRITES = frozenset(
    {
        "UpdateItem",
        "PutItem",
        "DeleteItem",
        "TransactWriteItems",
        "IssueCertificate",
        "RevokeCertificate",
        "CreateThing",
        "AddThingToThingGroup",
        "RegisterCertificate",
        "RegisterCertificateWithoutCA",
        "AttachPolicy",
        "AttachThingPrincipal",
        "UpdateCertificate",
        "DetachThingPrincipal",
        "DetachPolicy",
        "RemoveThingFromThingGroup",
    }
)


class ProcessDeath(BaseException):
    """The Lambda process died here (timeout, out of memory, lost host)."""


class InlineExecutor:
    """Runs "concurrent" steps at once, in order, so that call numbers are reproducible."""

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:  # a death in a step is that step's outcome
            future.set_exception(error)
        return future


@dataclass
class Crash:
    die_before: int | None = None
    die_after: int | None = None
    lose: int | None = None
    calls: list[str] = field(default_factory=list)
    dead: bool = False
    lost: bool = False

    @property
    def writes(self) -> list[int]:
        """Numbers (1-based) of the calls that change something."""
        return [n for n, name in enumerate(self.calls, 1) if name in WRITES]

    @staticmethod
    def points(mode: str, calls: list[str]) -> list[tuple[str, Crash]]:
        """Where a request that makes ``calls`` can fail, each a labelled ``Crash``.

        ``"die"``: before each call, and after the last. Dying after call k leaves AWS as dying
        before call k+1 does (the calls are made one at a time, and nothing but them leaves the
        process), so these n+1 deaths leave every state a death can. ``"lose"``: the answer of
        each call that changes something.
        """
        if mode == "lose":
            writes = Crash(calls=calls).writes
            return [(f"lose={k} ({calls[k - 1]})", Crash(lose=k)) for k in writes]
        if mode != "die":
            raise ValueError(f"no such mode: {mode!r}")
        before = [
            (f"die_before={k} ({calls[k - 1]})", Crash(die_before=k))
            for k in range(1, len(calls) + 1)
        ]
        return [*before, (f"die_after={len(calls)} ({calls[-1]})", Crash(die_after=len(calls)))]

    @contextmanager
    def watching(self, *clients: Any) -> Iterator[Crash]:
        hooks: list[tuple[Any, str, Callable[..., Any]]] = []
        for client in clients:
            hooks += [
                (client, "before-call", self._before_call),
                (client, "after-call", self._after_call),
                (client, "before-send", self._lose_answer(client)),
            ]
        for client, event, hook in hooks:
            client.meta.events.register_first(event, hook)
        try:
            yield self
        finally:
            for client, event, hook in hooks:
                client.meta.events.unregister(event, hook)

    def _before_call(self, model: Any, **_: Any) -> None:
        if self.dead:
            raise ProcessDeath("dead already")
        self.calls.append(model.name)
        if len(self.calls) == self.die_before:
            self.dead = True
            raise ProcessDeath(f"died before call {len(self.calls)} ({model.name})")

    def _after_call(self, **_: Any) -> None:
        if len(self.calls) == self.die_after and not self.dead:
            self.dead = True
            raise ProcessDeath(f"died after call {len(self.calls)} ({self.calls[-1]})")

    def _lose_answer(self, client: Any) -> Callable[..., Any]:
        delivering = False

        def hook(request: Any, event_name: str, **_: Any) -> None:
            nonlocal delivering
            if delivering or self.lost or len(self.calls) != self.lose:
                return None
            # Deliver the request for real (to moto's in-process mock, or over HTTP), then drop
            # the answer on the floor as a dropped connection would.
            delivering = True
            try:
                answers = client.meta.events.emit(event_name, request=request)
                if not any(answer is not None for _, answer in answers):
                    client._endpoint.http_session.send(request)
            finally:
                delivering = False
            self.lost = True
            raise ConnectionClosedError(endpoint_url=request.url)

        return hook
