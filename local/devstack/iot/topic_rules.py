"""AWS IoT topic rules for the offline broker: the IoT SQL subset the template uses, the
rules' matching and projection, and their Lambda action.

The deployer (devstack.cloudformation.resources.iot_rules) parses each ``AWS::IoT::TopicRule`` with
``parse_rule``; anything outside the subset below makes the deployment (so ``devstack up``)
fail with a message naming the rule. The broker calls ``RuleEngine.on_publish`` for every
message a device published and the device policy allowed, as IoT Core's rules engine sees it.

The subset (AwsIotSqlVersion ``2016-03-23`` only)::

    SELECT <item>[, <item>...] FROM '<topic filter>'

where an item is ``*`` (the payload's fields; the payload must be a JSON object without a repeated
key, else the rule does not fire and the broker logs why), ``encode(*, 'base64') AS name`` (the
whole payload, whatever it is, as base64 text: AWS's way to hand a Lambda action the raw
payload), ``topic() AS name`` (the whole topic), ``topic(n) AS name`` (its n-th level, from 1;
absent when the topic is shorter), ``principal() AS name`` (the publishing client's certificate
id: SHA-256 hex of its DER) or ``clientid() AS name``. AWS does not document which value wins
when a payload key selected by ``*`` has the name of an alias, or which of a repeated key ``*``
keeps: such a message does not fire the rule offline (the broker logs why), so no test passes on
a guess. No WHERE, no other functions, no nested fields, no literals. The only action is
``Lambda`` (``FunctionArn``); ``ErrorAction`` is accepted and not run (the failure is logged
instead).

The Lambda action runs as IoT runs it: an asynchronous invocation (the caller never waits) of
the function through the stack's Lambda workers (its package, Timeout and concurrency), and
only if an ``AWS::Lambda::Permission`` lets ``iot.amazonaws.com`` invoke the function for the
rule's ARN; otherwise the action fails and the broker logs ``RULE ... FAILED``. The function's
``EventInvokeConfig`` applies as in Lambda: an event that waits for a free environment past
``MaximumEventAgeInSeconds`` is dropped (``EventAgeExceeded``), and a failed invocation (an
error or a throttle) is retried up to ``MaximumRetryAttempts`` times, one minute, then two
minutes later (Lambda's delays), while the event is young enough; every drop is logged.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from devstack.awslambda.runtime import FunctionError, FunctionSpec
from devstack.errors import DeployError

logger = logging.getLogger("devstack.iot.broker")  # the broker's decision log

SQL_VERSION = "2016-03-23"
IOT_PRINCIPAL = "iot.amazonaws.com"
MAX_PENDING = 1000  # queued asynchronous invocations; past that an event is dropped (logged)
ASYNC_WORKERS = 8
RETRY_DELAYS = (60.0, 120.0)  # Lambda's delays before an asynchronous invocation's retries

_STATEMENT = re.compile(
    r"\s*SELECT\s+(?P<select>.+?)\s+FROM\s+'(?P<source>[^']*)'\s*", re.IGNORECASE | re.DOTALL
)
_ITEM = re.compile(
    r"(?P<function>topic|principal|clientid)\s*\(\s*(?P<argument>[0-9]*)\s*\)"
    r"\s+AS\s+(?P<alias>[A-Za-z_][A-Za-z0-9_]*)",
    re.IGNORECASE,
)
# encode(value, encodingScheme): with * as the value, the whole payload, JSON or not; 'base64'
# is the only scheme AWS documents.
_ENCODE = re.compile(
    r"encode\s*\(\s*\*\s*,\s*'base64'\s*\)\s+AS\s+(?P<alias>[A-Za-z_][A-Za-z0-9_]*)",
    re.IGNORECASE,
)


class UnsupportedSql(DeployError):
    """A topic rule the offline broker cannot run as AWS IoT would."""


@dataclass(frozen=True)
class Projection:
    """One ``<function>(<argument>) AS <alias>`` of the SELECT list."""

    function: str  # topic | principal | clientid | encode (the whole payload, base64)
    alias: str
    level: int | None = None  # topic(n)


@dataclass(frozen=True)
class Query:
    """A parsed statement of the subset: SELECT [*,] projections FROM 'filter'."""

    source: str
    select_all: bool
    projections: tuple[Projection, ...]

    def project(
        self, topic: str, payload: bytes, *, principal: str, client_id: str
    ) -> dict[str, Any]:
        """The JSON object the statement makes of one message; ValueError if it cannot."""
        event: dict[str, Any] = {}
        if self.select_all:
            event.update(_payload_fields(payload))
            clash = sorted(set(event) & {item.alias for item in self.projections})
            if clash:
                # AWS does not document whether the payload's key or the alias wins
                raise ValueError(
                    f"the payload has a key named like an alias ({', '.join(clash)}); "
                    "AWS does not document which wins, so the offline broker does not guess"
                )
        levels = topic.split("/")
        for item in self.projections:
            if item.function == "principal":
                event[item.alias] = principal
            elif item.function == "clientid":
                event[item.alias] = client_id
            elif item.function == "encode":
                event[item.alias] = base64.b64encode(payload).decode("ascii")
            elif item.level is None:
                event[item.alias] = topic
            elif item.level <= len(levels):
                event[item.alias] = levels[item.level - 1]
            else:
                event.pop(item.alias, None)  # Undefined in IoT SQL: the key is left out
        return event


class _RepeatedKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    fields = dict(pairs)
    if len(fields) != len(pairs):
        raise _RepeatedKey("the payload repeats a key; AWS does not document which one * keeps")
    return fields


def _payload_fields(payload: bytes) -> dict[str, Any]:
    """What ``*`` selects of a JSON payload; ValueError where AWS IoT's answer is not known."""
    try:
        body = json.loads(payload, object_pairs_hook=_unique_keys)
    except _RepeatedKey:
        raise
    except (ValueError, RecursionError) as exc:
        raise ValueError("the payload is not JSON") from exc
    if not isinstance(body, dict):
        raise ValueError("the payload is not a JSON object")
    return body


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT topic filter matching (+ one level, # the rest), as IoT's FROM clause."""
    wanted, levels = topic_filter.split("/"), topic.split("/")
    for index, part in enumerate(wanted):
        if part == "#":
            return True
        if index >= len(levels):
            return False
        if part != "+" and part != levels[index]:
            return False
    return len(wanted) == len(levels)


def _check_filter(topic_filter: str, where: str) -> None:
    parts = topic_filter.split("/")
    bad = (
        not topic_filter
        or any(("+" in p and p != "+") or ("#" in p and p != "#") for p in parts)
        or "#" in parts[:-1]
    )
    if bad:
        raise UnsupportedSql(f"{where}: FROM '{topic_filter}' is not a valid topic filter")


def _select_items(select: str, where: str) -> list[str]:
    """The SELECT list split at its top-level commas (not those inside a call or a string)."""
    items, start, depth, quoted = [], 0, 0, False
    for index, char in enumerate(select):
        if char == "'":
            quoted = not quoted
        elif quoted:
            continue
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            items.append(select[start:index])
            start = index + 1
        if depth < 0:
            raise UnsupportedSql(f"{where}: unbalanced parentheses in the SELECT list")
    if quoted or depth:
        raise UnsupportedSql(f"{where}: unbalanced quotes or parentheses in the SELECT list")
    return [*items, select[start:]]


def parse_sql(sql: str, where: str = "topic rule") -> Query:
    """Parse a statement of the subset (see the module docstring); UnsupportedSql otherwise."""
    found = _STATEMENT.fullmatch(sql or "")
    if found is None:
        raise UnsupportedSql(
            f"{where}: {sql!r} is outside the IoT SQL the offline broker runs "  # noqa: S608
            "(SELECT [*,] encode(*, 'base64')/topic(n)/principal()/clientid() AS name "
            "FROM 'filter'; "
            "see docs/offline-stack.md)"
        )
    _check_filter(found["source"], where)
    select_all = False
    projections: list[Projection] = []
    for raw in _select_items(found["select"], where):
        item = raw.strip()
        if item == "*":
            if select_all or projections:
                raise UnsupportedSql(f"{where}: '*' must come first, once")
            select_all = True
            continue
        encoded = _ENCODE.fullmatch(item)
        if encoded is not None:
            projections.append(Projection("encode", encoded["alias"]))
            continue
        match = _ITEM.fullmatch(item)
        if match is None:
            raise UnsupportedSql(
                f"{where}: SELECT item {item!r} is not supported offline (only *, "
                "encode(*, 'base64'), topic(n), principal(), clientid(), each AS a name)"
            )
        function = match["function"].lower()
        argument = match["argument"]
        if function != "topic" and argument:
            raise UnsupportedSql(f"{where}: {function}() takes no argument")
        level = int(argument) if argument else None
        if level is not None and level < 1:
            raise UnsupportedSql(f"{where}: topic(n) counts levels from 1")
        projections.append(Projection(function, match["alias"], level))
    if not select_all and not projections:
        raise UnsupportedSql(f"{where}: an empty SELECT list")
    aliases = [item.alias for item in projections]
    if len(set(aliases)) != len(aliases):
        raise UnsupportedSql(f"{where}: two SELECT items have the same name")
    return Query(found["source"], select_all, tuple(projections))


@dataclass(frozen=True)
class TopicRule:
    """An ``AWS::IoT::TopicRule`` as the broker runs it."""

    name: str
    arn: str
    query: Query
    function_arns: tuple[str, ...]  # the rule's Lambda actions
    disabled: bool = False


def parse_rule(name: str, arn: str, payload: Mapping[str, Any]) -> TopicRule:
    """The rule's ``TopicRulePayload`` checked against what the offline broker supports."""
    where = f"topic rule {name}"
    version = payload.get("AwsIotSqlVersion")
    if version != SQL_VERSION:
        raise UnsupportedSql(
            f"{where}: AwsIotSqlVersion {version!r}; the offline broker runs {SQL_VERSION!r} only"
        )
    query = parse_sql(str(payload.get("Sql", "")), where)
    actions = payload.get("Actions") or []
    arns: list[str] = []
    for action in actions:
        if not isinstance(action, Mapping) or set(action) != {"Lambda"}:
            kinds = ", ".join(sorted(action)) if isinstance(action, Mapping) else repr(action)
            raise UnsupportedSql(f"{where}: action {kinds} is not run offline (only Lambda)")
        arns.append(str(action["Lambda"]["FunctionArn"]))
    if not arns:
        raise UnsupportedSql(f"{where}: no action")
    disabled = payload.get("RuleDisabled") in (True, "true", "True")
    return TopicRule(name, arn, query, tuple(arns), disabled)


@dataclass(frozen=True)
class Permission:
    """An ``AWS::Lambda::Permission`` (resource-based policy statement of a function)."""

    function: str  # name, ARN or partial ARN, as the template gives it
    action: str
    principal: str
    source_arn: str | None = None
    source_account: str | None = None

    def allows(self, function: FunctionSpec, source_arn: str, account: str) -> bool:
        """Whether IoT may invoke ``function`` for the rule ``source_arn``."""
        names = {function.name, function.arn, f"{function.arn}:$LATEST"}
        if self.function not in names and not function.arn.endswith(f":{self.function}"):
            return False
        if self.action not in ("lambda:InvokeFunction", "lambda:*"):
            return False
        if self.principal != IOT_PRINCIPAL:
            return False
        if self.source_account is not None and self.source_account != account:
            return False
        # ArnLike: * and ? wildcards
        return self.source_arn is None or fnmatch.fnmatchcase(source_arn, self.source_arn)


@dataclass
class RuleEngine:
    """The template's topic rules, run on what devices publish (see the module docstring)."""

    rules: list[TopicRule]
    permissions: list[Permission]
    functions: Mapping[str, FunctionSpec]  # by logical id
    invoker: Callable[..., Any]  # (function, event, *, expires_at) -> result (ProcessInvoker)
    account_id: str
    on_done: Callable[[str, str, BaseException | None], None] | None = None  # tests
    _executor: ThreadPoolExecutor = field(init=False, repr=False)
    _pending: threading.BoundedSemaphore = field(init=False, repr=False)
    _retries: list[threading.Timer] = field(init=False, repr=False)
    _closed: bool = field(init=False, repr=False)
    _lock: threading.Lock = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._executor = ThreadPoolExecutor(ASYNC_WORKERS, thread_name_prefix="iot-rule")
        self._pending = threading.BoundedSemaphore(MAX_PENDING)
        self._retries = []
        self._closed = False
        self._lock = threading.Lock()

    def _function(self, arn: str) -> FunctionSpec | None:
        return next((f for f in self.functions.values() if arn in (f.arn, f.name)), None)

    def on_publish(self, topic: str, payload: bytes, *, principal: str, client_id: str) -> int:
        """Run every enabled rule whose filter matches; the number of invocations queued."""
        queued = 0
        for rule in self.rules:
            if rule.disabled or not topic_matches(rule.query.source, topic):
                continue
            try:
                event = rule.query.project(topic, payload, principal=principal, client_id=client_id)
            except ValueError as exc:
                logger.info("RULE %s topic=%s not run: %s", rule.name, topic, exc)
                continue
            for arn in rule.function_arns:
                queued += self._dispatch(rule, arn, topic, event)
        return queued

    def _dispatch(self, rule: TopicRule, arn: str, topic: str, event: dict[str, Any]) -> int:
        function = self._function(arn)
        if function is None:
            logger.info("RULE %s FAILED topic=%s: no function %s", rule.name, topic, arn)
            return 0
        if not any(p.allows(function, rule.arn, self.account_id) for p in self.permissions):
            # Lambda answers IoT with AccessDeniedException: no resource-based policy allows it
            logger.info(
                "RULE %s FAILED topic=%s: AccessDeniedException: iot.amazonaws.com may not "
                "invoke %s for %s",
                rule.name,
                topic,
                function.logical_id,
                rule.arn,
            )
            self._report(rule.name, function.logical_id, PermissionError("AccessDenied"))
            return 0
        if not self._pending.acquire(blocking=False):
            logger.info("RULE %s FAILED topic=%s: too many pending invocations", rule.name, topic)
            return 0
        logger.info("RULE %s topic=%s -> %s (Event)", rule.name, topic, function.logical_id)
        expires_at = time.monotonic() + function.maximum_event_age
        self._executor.submit(self._invoke, rule.name, function, event, expires_at, 0)
        return 1

    def _invoke(
        self,
        rule: str,
        function: FunctionSpec,
        event: dict[str, Any],
        expires_at: float,
        attempt: int,
    ) -> None:
        error: BaseException | None = None
        try:
            self.invoker(function, event, expires_at=expires_at)
        except FunctionError as exc:
            error = exc
            logger.info("RULE %s FAILED %s: %s", rule, function.logical_id, exc.error_type)
        except Exception as exc:  # the runtime is stopping, or broken: logged, never raised
            error = exc
            logger.info("RULE %s FAILED %s: %s", rule, function.logical_id, type(exc).__name__)
        finally:
            self._pending.release()
        retryable = isinstance(error, FunctionError) and error.error_type != "EventAgeExceeded"
        if retryable and self._retry_later(rule, function, event, expires_at, attempt):
            return
        self._report(rule, function.logical_id, error)

    def _retry_later(
        self,
        rule: str,
        function: FunctionSpec,
        event: dict[str, Any],
        expires_at: float,
        attempt: int,
    ) -> bool:
        """Schedule Lambda's next retry of a failed event, if it has one left in time."""
        if attempt >= min(function.maximum_retry_attempts, len(RETRY_DELAYS)):
            return False
        delay = RETRY_DELAYS[attempt]
        if time.monotonic() + delay > expires_at:
            logger.info(
                "RULE %s %s: no retry, the event would be too old", rule, function.logical_id
            )
            return False

        def again() -> None:
            if self._closed or not self._pending.acquire(blocking=False):
                logger.info("RULE %s %s: retry dropped", rule, function.logical_id)
                self._report(rule, function.logical_id, RuntimeError("retry dropped"))
                return
            logger.info("RULE %s -> %s (Event, retry %d)", rule, function.logical_id, attempt + 1)
            try:
                self._executor.submit(self._invoke, rule, function, event, expires_at, attempt + 1)
            except RuntimeError:  # the engine closed meanwhile
                self._pending.release()

        timer = threading.Timer(delay, again)
        timer.daemon = True
        with self._lock:
            if self._closed:
                return False
            self._retries = [t for t in self._retries if t.is_alive()] + [timer]
        logger.info("RULE %s %s: retry %d in %.0f s", rule, function.logical_id, attempt + 1, delay)
        timer.start()
        return True

    def _report(self, rule: str, function: str, error: BaseException | None) -> None:
        if self.on_done is not None:
            self.on_done(rule, function, error)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            retries, self._retries = self._retries, []
        for timer in retries:
            timer.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
