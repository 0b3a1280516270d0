"""CloudFormation custom resource that registers the stack's AWS Private CA with AWS IoT Core.

Layers: ``handler`` (parse, answer CloudFormation) -> ``service`` (on_create/on_update/on_delete,
no boto3) -> ``adapters`` (ACM PCA, IoT, audit table; built once per container).
"""
