"""Work every test would repeat on the same input, done once per test process.

- ``mock_aws()`` gives every test a new default boto3 session, and each new session reads the
  service models again (IoT's and DynamoDB's are large JSON files). They never change within a
  run, so all sessions share one botocore loader per search path.
- moto gives every new Cognito user pool the same private JSON web key, from the same file,
  and imports it again each time (recovering the RSA primes takes a fifth of a second). The
  imported key is kept for the key's text: every pool still signs with that same key.
- moto makes a 2048-bit RSA private key for every KMS key, a symmetric one too (the tables'
  server-side encryption creates one), where KMS has no private key to use: signing with a
  symmetric key is refused. Symmetric keys share one such unused key; asymmetric keys still
  get their own.
- moto repeats work on every request that AWS does not: each TransactWriteItems deep-copies every
  whole table it writes to (as the backup for a cancellation), so each commit copied every row
  and audit entry written so far; and each certificate the CA signs decrypts the CA's private
  key again (a key derivation, about 80 ms). The load test's patches for both (and for moto's
  per-request backend lookup), ``bench.moto_patches.costs``, back up only the items a
  transaction names and keep the decrypted key; tests/unit/test_moto_costs.py proves that
  answers, errors and rollbacks are unchanged.

Nothing a test sees changes: the models and the key are the ones it would have read.
"""

from __future__ import annotations

import functools
import json
import types
from typing import Any

import botocore.loaders
import botocore.session

from bench.moto_patches import costs

_done = False


def apply() -> None:
    global _done
    if _done:
        return
    _share_loaders()
    _keep_user_pool_keys()
    _share_unused_kms_private_keys()
    costs.apply()
    _done = True


def _share_loaders() -> None:
    botocore.session.create_loader = functools.cache(botocore.loaders.create_loader)


def _keep_user_pool_keys() -> None:
    import moto.cognitoidp.models as user_pools
    from joserfc import jwk

    if user_pools.jwk is not jwk:  # moto no longer imports keys this way: nothing to keep
        return
    imported: dict[str, Any] = {}

    def import_key(value: Any, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs or not isinstance(value, dict):
            return jwk.RSAKey.import_key(value, *args, **kwargs)
        text = json.dumps(value, sort_keys=True)
        if text not in imported:
            imported[text] = jwk.RSAKey.import_key(value)
        return imported[text]

    user_pools.jwk = types.SimpleNamespace(  # type: ignore[assignment]
        RSAKey=types.SimpleNamespace(import_key=import_key)
    )


def _share_unused_kms_private_keys() -> None:
    import moto.kms.models as kms

    generate = kms.generate_private_key

    @functools.cache
    def unused() -> Any:
        return generate("SYMMETRIC_DEFAULT")

    def generate_private_key(key_spec: str) -> Any:
        return unused() if key_spec == "SYMMETRIC_DEFAULT" else generate(key_spec)

    kms.generate_private_key = generate_private_key
