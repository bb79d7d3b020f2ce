"""The benchmark's ratios and tables, from figures made up here (no processes)."""

from __future__ import annotations

import io
import pathlib

import pytest
from rich.console import Console

from meridian.cli.bench.display import per_target, side_by_side
from meridian.cli.bench.runner import (
    TARGET_AUDIT_OFF,
    TARGET_CEILING,
    TARGET_MERIDIAN,
    TARGET_PEER,
    medians,
    ratios,
)
from meridian.cli.bench.stats import RunStats
from meridian.cli.bench.workloads import workload


def _run(
    target: str, operation: str, ops_per_s: float, p99_ms: float, cpu_ms: float = 0.5
) -> RunStats:
    return RunStats(
        target=target,
        operation=operation,
        operations=int(ops_per_s),
        errors=0,
        duration_s=1.0,
        ops_per_s=ops_per_s,
        p50_ms=p99_ms / 2,
        p99_ms=p99_ms,
        p999_ms=p99_ms * 2,
        server_cpu_ms_per_op=cpu_ms,
    )


RESULTS = [
    _run(TARGET_CEILING, "Empty", 2000.0, 10.0, cpu_ms=0.25),
    _run(TARGET_MERIDIAN, "Encrypt", 1000.0, 20.0, cpu_ms=1.0),
    _run(TARGET_AUDIT_OFF, "Encrypt", 1600.0, 15.0, cpu_ms=0.625),
    _run(TARGET_MERIDIAN, "Sign-ML_DSA_65", 400.0, 40.0),
    _run(TARGET_PEER, "Encrypt", 250.0, 50.0),
]


def test_ratios_against_the_ceiling_audit_off_and_the_peer() -> None:
    table = ratios(RESULTS, ["Encrypt", "Sign-ML_DSA_65"], peer=True)
    assert table["Encrypt"] == {
        "cpu_vs_ceiling": 4.0,
        "audit_cpu_ms_per_op": 0.375,
        "of_ceiling": 0.5,
        "p99_vs_ceiling_p99": 2.0,
        "audit_off_of_ceiling": 0.8,
        "audit_off_p99_vs_ceiling_p99": 1.5,
        "audit_on_vs_off": 0.625,
        "vs_moto": 4.0,
    }
    # moto has no ML-DSA: "n/a", not a missing peer.
    assert table["Sign-ML_DSA_65"]["vs_moto"] is None
    assert "audit_on_vs_off" not in table["Sign-ML_DSA_65"]


def test_without_the_peer_there_is_no_peer_ratio() -> None:
    table = ratios(RESULTS[:4], ["Encrypt", "Sign-ML_DSA_65"], peer=False)
    assert "vs_moto" not in table["Encrypt"]
    assert "vs_moto" not in table["Sign-ML_DSA_65"]


def test_tables_show_every_run_and_n_a_for_the_peer() -> None:
    document = {
        "results": [run.as_dict() for run in RESULTS],
        "ratios": ratios(RESULTS, ["Encrypt", "Sign-ML_DSA_65"], peer=True),
    }
    console = Console(file=io.StringIO(), width=200)
    console.print(per_target(document["results"]))
    console.print(side_by_side(document))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "Sign-ML_DSA_65" in text
    assert "4.0x" in text
    assert "n/a" in text
    assert "0.62" in text  # audit on / off for Encrypt


@pytest.mark.parametrize(
    "name", ["GenerateMac", "Sign-ECC_NIST_P256", "Verify-ECC_NIST_P256", "Sign-ML_DSA_65"]
)
def test_the_issue_s_workloads_exist(name: str) -> None:
    assert workload(name.lower()).name == name


def test_moto_is_not_asked_for_ml_dsa_but_is_for_ecc() -> None:
    assert workload("Sign-ML_DSA_65").boto_operation is None
    assert workload("Verify-ML_DSA_65").boto_operation is None
    assert workload("Verify-ECC_NIST_P256").boto_operation == "verify"


def test_rounds_are_summarized_by_their_medians() -> None:
    rounds = [
        [_run(TARGET_CEILING, "Empty", 1000.0, 10.0), _run(TARGET_MERIDIAN, "Encrypt", 300.0, 9.0)],
        [_run(TARGET_CEILING, "Empty", 3000.0, 30.0), _run(TARGET_MERIDIAN, "Encrypt", 500.0, 1.0)],
        [_run(TARGET_CEILING, "Empty", 2000.0, 20.0), _run(TARGET_MERIDIAN, "Encrypt", 100.0, 5.0)],
    ]
    ceiling, encrypt = medians(rounds)
    assert (ceiling.target, ceiling.ops_per_s, ceiling.p99_ms) == (TARGET_CEILING, 2000.0, 20.0)
    assert (encrypt.ops_per_s, encrypt.p99_ms) == (300.0, 5.0)
    assert encrypt.operations == 300 + 500 + 100
    assert encrypt.duration_s == 3.0


def test_columns_of_parts_that_did_not_run_are_left_out() -> None:
    runs = RESULTS[:2]  # the ceiling and audit-on Encrypt only
    document = {"results": [run.as_dict() for run in runs], "ratios": ratios(runs, ["Encrypt"])}
    console = Console(file=io.StringIO(), width=200)
    console.print(side_by_side(document))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "audit on ops/s" in text
    assert "audit off ops/s" not in text
    assert "moto" not in text


def test_a_profile_path_that_is_a_file_is_refused_before_the_run(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from meridian.cli.main import main

    not_a_folder = tmp_path / "profile"
    not_a_folder.write_text("")
    assert main(["bench", "--profile", str(not_a_folder), "--ops", "Encrypt"]) == 2
    assert "is not a folder" in capsys.readouterr().out
