"""The rules, with no AWS in sight: request and record models, errors, time budgets, keys and
certificates, attestation and expiry. Nothing here imports a port, an adapter or boto3."""
