"""Link shapes on disk, network files, the default geography and the control API."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from meridian.cli.netem import control, geography, state
from meridian.cli.netem.shape import LinkId, LinkShape, ShapeChange, ShapeError

REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-2"]


def test_the_default_geography_puts_the_client_by_the_first_region() -> None:
    shapes = geography.default_shapes(REGIONS)
    # Three client links and three peer links.
    assert len(shapes) == 6
    client = {link.b: shape.latency_ms for link, shape in shapes.items() if link.is_client}
    assert client == {"us-east-1": 1.0, "eu-west-1": 39.0, "ap-southeast-2": 111.0}
    assert shapes[LinkId.between("eu-west-1", "ap-southeast-2")].latency_ms == 122.0
    assert shapes[LinkId.between("eu-west-1", "us-east-1")].jitter_ms == 2.0
    # Regions the table does not know are 50 ms from everything.
    assert geography.one_way_ms("us-east-1", "xx-nowhere-1") == geography.UNKNOWN_MS
    assert all(shape == LinkShape() for shape in geography.flat_shapes(REGIONS).values())


def test_a_network_file_overrides_its_base(tmp_path: Path) -> None:
    path = tmp_path / "network.toml"
    path.write_text(
        'base = "flat"\n'
        "[[links]]\n"
        'between = ["eu-west-1", "us-east-1"]\n'
        "latency_ms = 80\n"
        "jitter_ms = 5\n"
        "[[links]]\n"
        'between = ["client", "ap-southeast-2"]\n'
        "bandwidth_kbps = 2000\n"
        "partitioned = true\n"
    )
    shapes = state.load_network_file(path, REGIONS)
    assert shapes[LinkId.between("us-east-1", "eu-west-1")] == LinkShape(latency_ms=80, jitter_ms=5)
    assert shapes[LinkId.between("client", "ap-southeast-2")] == LinkShape(
        bandwidth_kbps=2000, partitioned=True
    )
    assert shapes[LinkId.between("client", "us-east-1")] == LinkShape()
    assert len(shapes) == 6


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('base = "moon"\n', "unknown network base 'moon'"),
        ("speed = 1\n", "unknown key\\(s\\) speed"),
        ('[[links]]\nbetween = ["us-east-1"]\n', "between must name two sides"),
        ('[[links]]\nbetween = ["us-east-1", "mars-1-1"]\n', "'mars-1-1' is not a region"),
        ('[[links]]\nbetween = ["us-east-1", "eu-west-1"]\nloss_percent = 120\n', "link 1: loss"),
        ("links = [", "cannot be read"),
    ],
)
def test_a_wrong_network_file_is_refused_with_the_reason(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "network.toml"
    path.write_text(text)
    with pytest.raises(ShapeError, match=message):
        state.load_network_file(path, REGIONS)
    with pytest.raises(ShapeError, match="does not exist"):
        state.load_network_file(tmp_path / "missing.toml", REGIONS)


def test_the_state_file_keeps_configured_and_current_shapes(tmp_path: Path) -> None:
    fresh = state.NetworkState.fresh(geography.default_shapes(REGIONS))
    link = LinkId.between("eu-west-1", "us-east-1")
    cut = fresh.changed([link], ShapeChange(partitioned=True))
    assert cut.revision == fresh.revision + 1
    assert cut.faults() == {link: "39 ms +/- 2 ms, PARTITIONED"}
    path = tmp_path / "network" / "links.json"
    state.write_state(path, cut)
    again = state.read_state(path)
    assert again == cut
    restored = again.restored([link])
    assert restored.faults() == {}
    assert restored.revision == cut.revision + 1

    path.write_text(json.dumps({"format": 9}))
    with pytest.raises(ShapeError, match="has format 9"):
        state.read_state(path)
    with pytest.raises(ShapeError, match="is missing"):
        state.read_state(tmp_path / "nothing.json")


async def test_the_control_api_needs_the_token_and_a_known_op() -> None:
    calls: list[str] = []

    async def handle(operation: str) -> dict[str, object]:
        calls.append(operation)
        if operation != "ping":
            raise control.ControlError(f"unknown op {operation!r}")
        return {"revision": 3}

    server = control.ControlServer("secret", handle)
    port = await server.start("127.0.0.1", 0)
    endpoint = f"127.0.0.1:{port}"
    try:
        answer = await asyncio.to_thread(control.call, endpoint, "secret", "ping")
        assert answer == {"ok": True, "revision": 3}
        with pytest.raises(control.ControlError, match="wrong or missing token"):
            await asyncio.to_thread(control.call, endpoint, "guess", "ping")
        with pytest.raises(control.ControlError, match="unknown op 'explode'"):
            await asyncio.to_thread(control.call, endpoint, "secret", "explode")
    finally:
        await server.close()
    # A refused token never reaches the handler.
    assert calls == ["ping", "explode"]
    with pytest.raises(control.ControlError, match="does not answer"):
        await asyncio.to_thread(control.call, endpoint, "secret", "ping", timeout_s=1)
