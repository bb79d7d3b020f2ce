"""Random (version 4) UUID text for request and audit event ids, cheaply.

Every call gets two (its request id and its audit record's event id), and every item
of a batch two more. ``str(uuid.uuid4())`` makes a system call for 16 bytes and a
``UUID`` object per id; this draws the same 122 random bits from one ``os.urandom``
read per 256 ids and formats the text directly. The ids are unique, not secret
(CloudTrail shows them to anyone who reads the trail), so nothing here needs more than
the kernel's randomness that ``uuid4`` uses too.
"""

from __future__ import annotations

import os
import threading

_IDS_PER_READ = 256
_buffer = b""
_offset = 0
_lock = threading.Lock()


def new_id() -> str:
    """A fresh version-4 UUID in its canonical text (as ``str(uuid.uuid4())``)."""
    global _buffer, _offset
    with _lock:
        if _offset >= len(_buffer):
            _buffer = os.urandom(16 * _IDS_PER_READ)
            _offset = 0
        raw = _buffer[_offset : _offset + 16]
        _offset += 16
    text = raw.hex()
    # Version 4 in the 13th hex digit; the RFC 4122 variant (8, 9, a or b) in the 17th.
    variant = "89ab"[int(text[16], 16) & 3]
    return f"{text[:8]}-{text[8:12]}-4{text[13:16]}-{variant}{text[17:20]}-{text[20:]}"


def _forget_after_fork() -> None:
    # A forked child must not hand out the ids its parent still holds.
    global _buffer, _offset
    _buffer, _offset = b"", 0


os.register_at_fork(after_in_child=_forget_after_fork)
