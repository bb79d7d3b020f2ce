"""The development PKI issues exactly the certificate profiles of the shared contract."""

from __future__ import annotations

import argparse
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from meridian.cli import pki, pki_cmd


@pytest.fixture
def pki_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "pki"
    pki.init_ca(directory)
    return directory


def _certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _common_name(certificate: x509.Certificate) -> str:
    (attribute,) = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attribute.value)


def _alternative_names(certificate: x509.Certificate) -> x509.SubjectAlternativeName:
    return certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def _extended_usages(certificate: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def _assert_private_key(path: Path, certificate: x509.Certificate) -> None:
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    pem = path.read_bytes()
    # PKCS#8, unencrypted: the contract's format, which every TLS stack reads.
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert key.public_key() == certificate.public_key()


def _no_temporary_files(directory: Path) -> None:
    assert not [path for path in directory.rglob("*") if path.name.endswith(".tmp")]


def test_init_ca_writes_a_self_signed_p256_ca(pki_dir: Path) -> None:
    cert_path, key_path = pki.ca_paths(pki_dir)
    assert (cert_path, key_path) == (pki_dir / "ca.pem", pki_dir / "ca.key")
    ca = _certificate(cert_path)
    assert _common_name(ca) == "Meridian dev CA"
    assert ca.issuer == ca.subject
    ca.verify_directly_issued_by(ca)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert (ca.not_valid_after_utc - ca.not_valid_before_utc).days >= 3650
    _assert_private_key(key_path, ca)
    _no_temporary_files(pki_dir)


def test_init_ca_takes_a_common_name_and_validity(tmp_path: Path) -> None:
    pki.init_ca(tmp_path, common_name="Test CA", days=10)
    ca = _certificate(tmp_path / "ca.pem")
    assert _common_name(ca) == "Test CA"
    assert (ca.not_valid_after_utc - ca.not_valid_before_utc).days == 10


@pytest.mark.parametrize("existing", ["ca.pem", "ca.key"])
def test_init_ca_refuses_to_overwrite_an_existing_ca(tmp_path: Path, existing: str) -> None:
    (tmp_path / existing).write_bytes(b"precious")
    with pytest.raises(pki.PkiError, match="already exists"):
        pki.init_ca(tmp_path)
    assert (tmp_path / existing).read_bytes() == b"precious"
    assert [path.name for path in tmp_path.iterdir()] == [existing]


def test_init_ca_twice_keeps_the_first_ca(pki_dir: Path) -> None:
    before = (pki_dir / "ca.pem").read_bytes(), (pki_dir / "ca.key").read_bytes()
    with pytest.raises(pki.PkiError, match="refusing to overwrite"):
        pki.init_ca(pki_dir)
    assert ((pki_dir / "ca.pem").read_bytes(), (pki_dir / "ca.key").read_bytes()) == before


def test_node_certificate_has_the_contract_profile(pki_dir: Path) -> None:
    cert_path, key_path = pki.issue_node(pki_dir, "us-east-1", ips=["127.0.0.11", "::1"])
    assert cert_path == pki_dir / "nodes" / "us-east-1.pem"
    assert key_path == pki_dir / "nodes" / "us-east-1.key"
    node = _certificate(cert_path)
    ca = _certificate(pki_dir / "ca.pem")
    node.verify_directly_issued_by(ca)
    assert _common_name(node) == "us-east-1.node.meridian"
    names = _alternative_names(node)
    assert names.get_values_for_type(x509.DNSName) == ["us-east-1.node.meridian", "localhost"]
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.11"),
        ipaddress.ip_address("::1"),
    ]
    assert names.get_values_for_type(x509.UniformResourceIdentifier) == ["meridian:node:us-east-1"]
    assert _extended_usages(node) == {
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    }
    assert not node.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    _assert_private_key(key_path, node)
    _no_temporary_files(pki_dir)


def test_node_certificate_defaults_to_127_0_0_1(pki_dir: Path) -> None:
    cert_path, _ = pki.issue_node(pki_dir, "eu-west-1")
    names = _alternative_names(_certificate(cert_path))
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]


def test_node_certificate_passes_a_strict_server_and_client_verifier(pki_dir: Path) -> None:
    cert_path, _ = pki.issue_node(pki_dir, "us-east-1", ips=["127.0.0.11"])
    node = _certificate(cert_path)
    store = Store([_certificate(pki_dir / "ca.pem")])
    for name in ("us-east-1.node.meridian", "localhost"):
        verifier = PolicyBuilder().store(store).build_server_verifier(x509.DNSName(name))
        assert verifier.verify(node, []) == [node, _certificate(pki_dir / "ca.pem")]
    # Peers present the node certificate as a client certificate (clientAuth).
    client = PolicyBuilder().store(store).build_client_verifier().verify(node, [])
    assert client.subjects is not None
    assert x509.UniformResourceIdentifier("meridian:node:us-east-1") in client.subjects


def test_client_certificate_has_the_contract_profile(pki_dir: Path) -> None:
    cert_path, key_path = pki.issue_client(pki_dir, "alice@example.com")
    assert cert_path == pki_dir / "clients" / "alice@example.com.pem"
    assert key_path == pki_dir / "clients" / "alice@example.com.key"
    client = _certificate(cert_path)
    client.verify_directly_issued_by(_certificate(pki_dir / "ca.pem"))
    assert _common_name(client) == "alice@example.com"
    names = _alternative_names(client)
    assert list(names) == [x509.UniformResourceIdentifier("meridian:principal:alice@example.com")]
    assert _extended_usages(client) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    store = Store([_certificate(pki_dir / "ca.pem")])
    verified = PolicyBuilder().store(store).build_client_verifier().verify(client, [])
    assert verified.subjects == [
        x509.UniformResourceIdentifier("meridian:principal:alice@example.com")
    ]
    _assert_private_key(key_path, client)


def test_client_certificate_cannot_serve_tls(pki_dir: Path) -> None:
    cert_path, _ = pki.issue_client(pki_dir, "admin")
    store = Store([_certificate(pki_dir / "ca.pem")])
    verifier = PolicyBuilder().store(store).build_server_verifier(x509.DNSName("admin"))
    with pytest.raises(x509.verification.VerificationError):
        verifier.verify(_certificate(cert_path), [])


def test_reissuing_replaces_the_pair(pki_dir: Path) -> None:
    first_cert, first_key = (path.read_bytes() for path in pki.issue_client(pki_dir, "admin"))
    cert_path, key_path = pki.issue_client(pki_dir, "admin")
    assert cert_path.read_bytes() != first_cert
    assert key_path.read_bytes() != first_key
    _assert_private_key(key_path, _certificate(cert_path))


def test_leaf_never_outlives_its_ca(tmp_path: Path) -> None:
    pki.init_ca(tmp_path, days=30)
    cert_path, _ = pki.issue_client(tmp_path, "admin", days=825)
    ca = _certificate(tmp_path / "ca.pem")
    assert _certificate(cert_path).not_valid_after_utc <= ca.not_valid_after_utc


def test_issuing_without_a_ca_says_to_run_init(tmp_path: Path) -> None:
    with pytest.raises(pki.PkiError, match="meridian pki init"):
        pki.issue_client(tmp_path, "admin")
    with pytest.raises(pki.PkiError, match="no CA"):
        pki.issue_node(tmp_path, "us-east-1")


@pytest.mark.parametrize(
    "region",
    [
        "",
        "us",
        "us-east",
        "US-east-1",
        "us-east-1a",
        "us_east_1",
        "us-east-1\n",
        "../etc-x-1",
        "a-b-c-d-1",
        "us-east-",
        " us-east-1",
    ],
)
def test_bad_region_names_are_rejected(pki_dir: Path, region: str) -> None:
    with pytest.raises(pki.PkiError, match="invalid region name"):
        pki.issue_node(pki_dir, region)
    assert not (pki_dir / "nodes").exists()


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-12", "us-gov-west-1", "ap-north-east-3"])
def test_good_region_names_are_accepted(region: str) -> None:
    assert pki.validate_region(region) == region


@pytest.mark.parametrize(
    "principal",
    ["", "a" * 65, "a/b", "../admin", "a b", "admin\n", "ärger", "a:b", "a*"],
)
def test_bad_principal_names_are_rejected(pki_dir: Path, principal: str) -> None:
    with pytest.raises(pki.PkiError, match="invalid principal name"):
        pki.issue_client(pki_dir, principal)
    assert not (pki_dir / "clients").exists()


@pytest.mark.parametrize("principal", ["admin", "a" * 64, "A+b=c,d.e@f_g-h", "1"])
def test_good_principal_names_are_accepted(principal: str) -> None:
    assert pki.validate_principal(principal) == principal


@pytest.mark.parametrize("ip", ["127.0.0.256", "localhost", "10.0.0.1/8", ""])
def test_bad_ip_addresses_are_rejected(pki_dir: Path, ip: str) -> None:
    with pytest.raises(pki.PkiError, match="invalid IP address"):
        pki.issue_node(pki_dir, "us-east-1", ips=[ip])


def test_a_node_certificate_needs_an_ip(pki_dir: Path) -> None:
    with pytest.raises(pki.PkiError, match="at least one IP"):
        pki.issue_node(pki_dir, "us-east-1", ips=[])


def test_keys_are_0600_whatever_the_umask(tmp_path: Path) -> None:
    import os

    previous = os.umask(0)
    try:
        pki.init_ca(tmp_path)
        _, key_path = pki.issue_client(tmp_path, "admin")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


# The command line, through the group's own parser (the other groups are not needed).


def _run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="meridian")
    pki_cmd.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


def test_cli_init_and_issue_print_the_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "pki"
    assert _run_cli(["pki", "init", "--dir", str(directory)]) == 0
    assert capsys.readouterr().out.split() == [str(directory / "ca.pem"), str(directory / "ca.key")]

    argv = ["pki", "issue", "--dir", str(directory), "--node", "us-east-1"]
    assert _run_cli([*argv, "--ip", "127.0.0.11", "--ip", "127.0.0.1"]) == 0
    assert capsys.readouterr().out.split() == [
        str(directory / "nodes" / "us-east-1.pem"),
        str(directory / "nodes" / "us-east-1.key"),
    ]
    names = _alternative_names(_certificate(directory / "nodes" / "us-east-1.pem"))
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == [
        "127.0.0.11",
        "127.0.0.1",
    ]

    assert _run_cli(["pki", "issue", "--dir", str(directory), "--principal", "bob"]) == 0
    assert capsys.readouterr().out.split() == [
        str(directory / "clients" / "bob.pem"),
        str(directory / "clients" / "bob.key"),
    ]


def test_cli_reports_operator_errors_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run_cli(["pki", "issue", "--dir", str(tmp_path), "--principal", "bob"]) == 1
    assert "meridian pki init" in capsys.readouterr().err
    assert _run_cli(["pki", "init", "--dir", str(tmp_path)]) == 0
    capsys.readouterr()
    assert _run_cli(["pki", "init", "--dir", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert "refusing to overwrite" in error
    assert "Traceback" not in error
    assert _run_cli(["pki", "issue", "--dir", str(tmp_path), "--principal", "a/b"]) == 1
    assert "invalid principal name" in capsys.readouterr().err
    argv = ["pki", "issue", "--dir", str(tmp_path), "--principal", "bob", "--ip", "127.0.0.1"]
    assert _run_cli(argv) == 1
    assert "--ip applies to node certificates only" in capsys.readouterr().err


def test_cli_requires_exactly_one_subject(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        _run_cli(["pki", "issue", "--dir", str(tmp_path)])
    with pytest.raises(SystemExit):
        _run_cli(["pki", "issue", "--dir", str(tmp_path), "--node", "a-b-1", "--principal", "x"])
