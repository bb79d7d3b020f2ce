"""The development PKI: one cluster CA, node certificates and client certificates.

The file layout and the certificate profiles are a shared contract
(docs/contributors/shared-contracts.md, "PKI"): nodes derive the caller's principal from
the URI SAN written here, and clients verify nodes by the DNS SAN written here, so the
profiles below must change only together with that document.

Every key is ECDSA P-256 in unencrypted PKCS#8 PEM with mode 0600. Every file is written
atomically (temporary file, fsync, rename), so a crash never leaves a half-written key
or certificate behind under its final name.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import secrets
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "DEFAULT_NODE_IPS",
    "PkiError",
    "ca_paths",
    "client_paths",
    "init_ca",
    "issue_client",
    "issue_node",
    "load_ca",
    "node_paths",
    "node_server_name",
    "validate_principal",
    "validate_region",
    "write_atomic",
]

# The same rule as the node configuration's `region`; fullmatch, because `$` in re.match
# also accepts a trailing newline, and a region becomes a file name and a DNS name here.
_REGION = re.compile(r"([a-z]+-){2,3}\d+")
# AWS IAM user names; the principal becomes a file name, a CN and part of a URI.
_PRINCIPAL = re.compile(r"[A-Za-z0-9+=,.@_-]{1,64}")

DEFAULT_NODE_IPS: tuple[str, ...] = ("127.0.0.1",)
CA_VALIDITY_DAYS_DEFAULT = 3650
LEAF_VALIDITY_DAYS_DEFAULT = 825
# Certificates start a little in the past so that a peer whose clock is slightly behind
# does not reject a certificate issued a moment ago.
_BACKDATE = datetime.timedelta(minutes=5)

_KEY_MODE = 0o600
_CERT_MODE = 0o644


class PkiError(Exception):
    """An operator error: bad name, missing CA, refusing to overwrite. The message says why."""


def validate_region(region: str) -> str:
    if not _REGION.fullmatch(region):
        raise PkiError(
            f"invalid region name {region!r}: expected lower-case words and a number "
            "joined by '-', such as 'us-east-1'"
        )
    return region


def validate_principal(principal: str) -> str:
    if not _PRINCIPAL.fullmatch(principal):
        raise PkiError(
            f"invalid principal name {principal!r}: expected 1-64 characters from "
            "A-Z a-z 0-9 and +=,.@_- (the rules of an IAM user name)"
        )
    return principal


def node_server_name(region: str) -> str:
    """The DNS name that clients pass as the TLS target name override for a region's node."""
    return f"{validate_region(region)}.node.meridian"


def ca_paths(pki_dir: Path) -> tuple[Path, Path]:
    return pki_dir / "ca.pem", pki_dir / "ca.key"


def node_paths(pki_dir: Path, region: str) -> tuple[Path, Path]:
    validate_region(region)
    return pki_dir / "nodes" / f"{region}.pem", pki_dir / "nodes" / f"{region}.key"


def client_paths(pki_dir: Path, principal: str) -> tuple[Path, Path]:
    validate_principal(principal)
    return pki_dir / "clients" / f"{principal}.pem", pki_dir / "clients" / f"{principal}.key"


def init_ca(
    pki_dir: Path,
    *,
    common_name: str = "Meridian dev CA",
    days: int = CA_VALIDITY_DAYS_DEFAULT,
) -> None:
    """Create the cluster CA in `pki_dir`; refuse if any CA file is already there.

    Replacing a CA would silently invalidate every certificate it issued, so an existing
    CA is an error, never overwritten.
    """
    if days < 1:
        raise PkiError(f"CA validity must be at least 1 day, not {days}")
    cert_path, key_path = ca_paths(pki_dir)
    for path in (cert_path, key_path):
        if path.exists():
            raise PkiError(
                f"a CA already exists in {pki_dir} ({path.name}); refusing to overwrite it, "
                "since that would invalidate every certificate it issued"
            )
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    public_key = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        # A path length of 0: this CA signs leaf certificates only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(key, hashes.SHA256())
    )
    pki_dir.mkdir(parents=True, exist_ok=True)
    # The key goes first and with `overwrite=False`: two concurrent `init` runs cannot both
    # win, and a crash between the two writes leaves a key without a certificate, which
    # the existence check above reports instead of silently pairing it with a new one.
    write_atomic(key_path, _private_key_pem(key), mode=_KEY_MODE, overwrite=False)
    write_atomic(cert_path, _certificate_pem(certificate), mode=_CERT_MODE, overwrite=False)


def load_ca(pki_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = ca_paths(pki_dir)
    try:
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except FileNotFoundError as error:
        raise PkiError(
            f"no CA in {pki_dir} ({Path(error.filename).name} is missing); "
            f"run `meridian pki init --dir {pki_dir}` first"
        ) from error
    except ValueError as error:
        raise PkiError(f"the CA in {pki_dir} cannot be read: {error}") from error
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"the CA key {key_path} is not an ECDSA key")
    if key.public_key() != certificate.public_key():
        raise PkiError(f"the CA key {key_path} does not belong to the certificate {cert_path}")
    return certificate, key


def issue_node(
    pki_dir: Path,
    region: str,
    *,
    ips: Sequence[str] = DEFAULT_NODE_IPS,
    days: int = LEAF_VALIDITY_DAYS_DEFAULT,
) -> tuple[Path, Path]:
    """Issue (or re-issue) the node certificate of `region`; returns (cert path, key path).

    The certificate serves TLS (serverAuth) and authenticates the node to its peers
    (clientAuth), which take the region from the URI SAN `meridian:node:<region>`.
    """
    server_name = node_server_name(region)
    if not ips:
        raise PkiError("a node certificate needs at least one IP address")
    addresses: list[x509.GeneralName] = []
    for ip in ips:
        try:
            addresses.append(x509.IPAddress(ipaddress.ip_address(ip)))
        except ValueError as error:
            raise PkiError(f"invalid IP address {ip!r} for node {region}") from error
    names: list[x509.GeneralName] = [
        x509.DNSName(server_name),
        x509.DNSName("localhost"),
        *addresses,
        x509.UniformResourceIdentifier(f"meridian:node:{region}"),
    ]
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    cert_path, key_path = node_paths(pki_dir, region)
    _issue(pki_dir, server_name, names, usages, days, cert_path, key_path)
    return cert_path, key_path


def issue_client(
    pki_dir: Path, principal: str, *, days: int = LEAF_VALIDITY_DAYS_DEFAULT
) -> tuple[Path, Path]:
    """Issue (or re-issue) the client certificate of `principal`; returns (cert, key) paths."""
    cert_path, key_path = client_paths(pki_dir, principal)
    names: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(f"meridian:principal:{principal}")
    ]
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    _issue(pki_dir, principal, names, usages, days, cert_path, key_path)
    return cert_path, key_path


def _issue(
    pki_dir: Path,
    common_name: str,
    names: list[x509.GeneralName],
    usages: list[x509.ObjectIdentifier],
    days: int,
    cert_path: Path,
    key_path: Path,
) -> None:
    if days < 1:
        raise PkiError(f"certificate validity must be at least 1 day, not {days}")
    ca_certificate, ca_key = load_ca(pki_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    # A leaf must not outlive its CA: verifiers would reject it after the CA expires anyway.
    not_after = min(now + datetime.timedelta(days=days), ca_certificate.not_valid_after_utc)
    ca_key_identifier = ca_certificate.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier
    ).value
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_certificate.subject)
        .public_key(key.public_key())
        .serial_number(_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            # ECDSA keys only sign (ECDHE does the key exchange), so digitalSignature is all.
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_key_identifier),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    # Re-issuing replaces the pair: key first, so that a crash in between leaves a new key
    # with the old certificate, which TLS reports at once as a mismatched pair.
    write_atomic(key_path, _private_key_pem(key), mode=_KEY_MODE, overwrite=True)
    write_atomic(cert_path, _certificate_pem(certificate), mode=_CERT_MODE, overwrite=True)


def _serial_number() -> int:
    # RFC 5280 allows at most 20 octets and requires a positive number; 159 random bits fit.
    return secrets.randbits(159) | 1


def _private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def _certificate_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def write_atomic(path: Path, data: bytes, *, mode: int, overwrite: bool) -> None:
    """Write `data` to `path` through a temporary file in the same folder.

    The temporary file is created with its final mode, so a key is never readable by
    others even for an instant. With `overwrite=False` the final name is claimed with
    link(2), which fails if the name exists, so an existing file is never replaced.
    """
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        # The umask may have narrowed the mode given to open(2); set it exactly.
        os.chmod(temporary, mode)
        if overwrite:
            os.replace(temporary, path)
        else:
            try:
                os.link(temporary, path)
            except FileExistsError as error:
                raise PkiError(f"{path} already exists; refusing to overwrite it") from error
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    # The rename is durable only once the folder's entry is on disk.
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
