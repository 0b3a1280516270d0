"""The offline stack: the SAM application on this machine, with no AWS account and no Docker.

moto in server mode plays the AWS services, a local deployer seeds it from ``template.yaml``
through the SAM translator, and a local gateway plays API Gateway in front of the real Lambda
handlers. Run ``.venv/bin/devstack --help``.

One sub-package per AWS service it stands in for: ``cloudformation`` (the deployer),
``awslambda`` (packages, execution environments, the Invoke API), ``apigateway`` (the gateway
and its Cognito authorizer), ``iot`` (the MQTT broker, topic rules, iot-data), and
``moto_bridges`` (what it adds to moto, which plays the rest). At the top: ``stack`` (all of
it running, and its state file), ``cli``, ``users`` (the app's users in the Cognito pool),
``logs``, ``hints`` (the commands it prints), ``http_limits`` (shared by its HTTP servers)
and ``errors``.
"""
