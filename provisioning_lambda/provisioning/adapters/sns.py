"""Amazon SNS: the operators' topic (the expiry watch's summaries)."""

from __future__ import annotations

from typing import Any

from provisioning.adapters.aws import aws_step

SUBJECT_MAX = 100  # SNS refuses a longer subject


class TopicNotifier:
    def __init__(self, client: Any, topic_arn: str) -> None:
        self.client = client
        self._topic_arn = topic_arn

    def notify(self, subject: str, message: str) -> None:
        with aws_step("NOTIFY"):
            self.client.publish(
                TopicArn=self._topic_arn, Subject=subject[:SUBJECT_MAX], Message=message
            )
