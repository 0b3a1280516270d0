"""What the offline stack adds to moto, which stands in for ACM PCA, AWS IoT's registry,
DynamoDB, Cognito, SNS and CloudWatch Logs.

``gaps`` bridges each place where moto answers differently from AWS in a way the product relies
on (applied by the stack and by the test session); ``quotas`` puts AWS's API request-rate quotas
in front of the stack's moto server when asked (``devstack up --quotas``, ``make load``);
``lifetime`` has ACM PCA issue device certificates valid for minutes when asked (``devstack up
--cert-lifetime``), to watch renewal and expiry offline.

Named ``moto_bridges``, not ``moto``, so that it can never be mistaken for the moto package.
"""
