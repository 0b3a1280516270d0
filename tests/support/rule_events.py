"""What the template's renewal topic rules hand the renewal function when a device publishes:
the rules' own SQL from template.yaml, run by the offline broker's IoT SQL
(devstack.iot.topic_rules), so a test's event is the one IoT would deliver, not a hand-made copy of
it."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from cfnlint.decode import decode

from devstack.iot.topic_rules import Query, parse_sql, topic_matches

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
RULES = ("RenewRequestRule", "RenewConfirmRule")


@cache
def renewal_queries() -> dict[str, Query]:
    template, _ = decode(str(TEMPLATE))
    assert template is not None
    resources = template["Resources"]
    return {
        name: parse_sql(str(resources[name]["Properties"]["TopicRulePayload"]["Sql"]), name)
        for name in RULES
    }


def rule_event(
    thing: str,
    principal: str,
    payload: bytes | dict[str, Any],
    *,
    confirm: bool = False,
    client_id: str | None = None,
) -> dict[str, Any]:
    """The event for ``payload`` published by ``principal`` on the thing's renew (or confirm)
    topic; a dict payload is sent as its JSON, bytes as they are."""
    topic = f"things/{thing}/certificate/renew" + ("/confirm" if confirm else "")
    raw = json.dumps(payload).encode() if isinstance(payload, dict) else payload
    (query,) = [q for q in renewal_queries().values() if topic_matches(q.source, topic)]
    return query.project(
        topic, raw, principal=principal, client_id=thing if client_id is None else client_id
    )
