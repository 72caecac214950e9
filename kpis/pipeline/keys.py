"""The subscriber key: the secret turned into the hash key, and the key's public fingerprint.

Plain ``hashlib``, so that a run derives its key without loading pandas or pyarrow.
"""

from __future__ import annotations

import base64
import hashlib


def subscriber_hash_key(secret: str) -> str:
    """Derive the 16-character SipHash key used to pseudonymise msisdn values."""
    digest = hashlib.sha256(b"network-analysis/subscriber/" + secret.encode()).digest()
    return base64.b64encode(digest[:12]).decode("ascii")


def key_id_for(hash_key: str) -> str:
    """A short public fingerprint of the subscriber key, stored beside the state."""
    return hashlib.sha256(("key-id/" + hash_key).encode()).hexdigest()[:16]
