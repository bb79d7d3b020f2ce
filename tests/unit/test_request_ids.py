"""Request and event ids (server/api/request_ids.py): version-4 UUID text, never repeated."""

from __future__ import annotations

import os
import uuid

from meridian.server.api.request_ids import new_id


def test_ids_are_version_4_uuids_in_canonical_text() -> None:
    for _ in range(2_000):  # several refills of the buffer
        text = new_id()
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_ids_do_not_repeat() -> None:
    ids = [new_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)


def test_a_forked_child_does_not_reuse_the_parents_ids() -> None:
    new_id()  # the parent holds a buffer with ids still unused
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.write(write, new_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    from_child = os.read(read, 64).decode()
    os.close(read)
    assert from_child != new_id()
    uuid.UUID(from_child)
