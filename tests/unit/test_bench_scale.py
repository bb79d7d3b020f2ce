"""The scale benchmark's files and its comparison across sizes (cli/bench/scale*.py)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from meridian.cli.bench.scale import SizeResult, growth
from meridian.cli.bench.scale_load import read_ciphertexts, write_ciphertexts, write_key_ids


def test_ciphertexts_round_trip_through_their_file(tmp_path: Path) -> None:
    blobs = [b"", b"\x00" * 300, bytes(range(256))]
    path = tmp_path / "blobs.bin"
    write_ciphertexts(path, blobs[:2])
    write_ciphertexts(path, blobs[2:])  # appended, as seeding writes batch by batch
    assert read_ciphertexts(path) == blobs


def test_key_files_hold_fixed_width_ids_only(tmp_path: Path) -> None:
    path = tmp_path / "keys.bin"
    ids = [str(uuid.uuid4()) for _ in range(3)]
    write_key_ids(path, ids)
    assert path.read_bytes() == "".join(ids).encode()
    with pytest.raises(ValueError, match="UUID"):
        write_key_ids(path, ["alias/not-a-key-id"])


def _run(mode: str, p50_ms: list[float], cpu_ms: float) -> dict[str, object]:
    return {
        "target": mode,
        "operation": "Encrypt",
        "p50_ms": sorted(p50_ms)[len(p50_ms) // 2],
        "round_p50_ms": p50_ms,
        "server_cpu_ms_per_op": cpu_ms,
    }


def test_growth_compares_each_size_with_the_smallest() -> None:
    small = SizeResult(keys=1_000, runs=[_run("all-keys", [10.0, 10.0, 10.0], 1.0)])
    large = SizeResult(keys=1_000_000, runs=[_run("all-keys", [12.0, 10.5, 9.0], 2.0)])
    (row,) = growth([small, large])
    assert (row["from_keys"], row["to_keys"]) == (1_000, 1_000_000)
    assert row["p50_change"] == pytest.approx(0.05)
    assert row["p50_change_by_round"] == pytest.approx(0.05)
    assert row["server_cpu_change"] == pytest.approx(1.0)
    assert row["within_target"] is True
