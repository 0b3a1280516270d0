"""The offline stack: the SAM application on this machine, with no AWS account and no Docker.

moto in server mode plays the AWS services, a local deployer seeds it from ``template.yaml``
through the SAM translator, and a local gateway plays API Gateway in front of the real Lambda
handlers. Run ``python -m devstack --help``.
"""
