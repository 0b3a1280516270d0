"""Stands in for AWS Lambda: ``sam build`` packages, execution environments and the Invoke API.

``packages`` builds each function's deployment package; ``runtime`` is the ``Invoker``
interface (and the in-process runner for tests under ``mock_aws``); ``workers`` runs each
function in reused worker processes, each started from ``lambda_worker.py``; ``lambda_api``
serves Lambda's Invoke API.
"""
