"""Envelope encryption: data of any size, sealed locally under data keys from KMS.

    from meridian.client import KmsClient
    from meridian.client.envelope import DataKeyCache, Envelope

    with KmsClient.from_cluster_file("cluster.json") as kms:
        envelope = Envelope(
            kms,
            ["mrk-1234abcd12ab34cd56ef1234567890ab",  # any region with a replica
             "arn:meridian:kms:eu-west-1:111122223333:key/0b1f2c3d-…"],  # one more region
            cache=DataKeyCache(max_age_s=300, max_messages=1000),
        )
        message = envelope.encrypt(b"…", encryption_context={"tenant": "acme"})
        envelope.encrypt_file("backup.tar", "backup.tar.menv")
        opened = envelope.decrypt(message, expected_context={"tenant": "acme"})

Each message gets a fresh 32-byte data key (GenerateDataKey under the first key), wrapped
under every key given, so any one of them can open it — an MRK and a key in another
region make a message that outlives the loss of a region. The payload is cut into
frames sealed with AES-256-GCM under a key derived for this message only; the header
(format version, encryption context, wrapped keys) is authenticated and the data key is
committed, and frames are bound to their position and to the end of the message, so a
changed, reordered, truncated or extended message does not open. The format is
specified, with test vectors, in docs/envelope-format.md.

Errors (``meridian.client.envelope.errors``)::

    EnvelopeError
    ├── InvalidMessageError              not a message, or changed, truncated, reordered
    ├── NoDecryptableKeyError            no wrapped data key could be unwrapped
    └── EncryptionContextMismatchError   an expected context pair is missing
    (KMS errors of the generating call surface as meridian.client.errors.KmsError)
"""

from meridian.client.envelope._asyncio import AsyncEnvelope
from meridian.client.envelope._blocking import Envelope
from meridian.client.envelope._core import DecryptedMessage, MessageInfo
from meridian.client.envelope.cache import CacheStats, DataKeyCache
from meridian.client.envelope.errors import (
    EncryptionContextMismatchError,
    EnvelopeError,
    InvalidMessageError,
    NoDecryptableKeyError,
)
from meridian.client.envelope.format import FRAME_LENGTH_DEFAULT, Header, WrappedKey
from meridian.client.envelope.stream import MessageDecryptor, MessageEncryptor

__all__ = [
    "FRAME_LENGTH_DEFAULT",
    "AsyncEnvelope",
    "CacheStats",
    "DataKeyCache",
    "DecryptedMessage",
    "EncryptionContextMismatchError",
    "Envelope",
    "EnvelopeError",
    "Header",
    "InvalidMessageError",
    "MessageDecryptor",
    "MessageEncryptor",
    "MessageInfo",
    "NoDecryptableKeyError",
    "WrappedKey",
]
