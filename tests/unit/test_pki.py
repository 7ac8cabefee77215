"""The local PKI: certificate fields, validity windows, chains, file modes, idempotent init.

The clock is injected (`NOW`), so expired and not-yet-valid certificates are
made directly. The TLS tests at the end run OpenSSL's own handshake over memory
buffers (no socket): the same checks mosquitto makes with `require_certificate`
and the CN it takes with `use_identity_as_username`.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    ClientVerifier,
    PolicyBuilder,
    Store,
    VerificationError,
)

from v2c.contract.errors import InvalidInput, NotFound, ValidationFailed
from v2c.infra.pki import authority as pki

NOW = datetime(2030, 6, 1, 12, 0, 0, tzinfo=UTC)
VIN = "VIN-1HGBH41JXMN109186"


@pytest.fixture(scope="module")
def ca() -> pki.CertificateAuthority:
    return pki.create_ca(now=NOW)


def _client_verifier(ca_cert: x509.Certificate, at: datetime = NOW) -> ClientVerifier:
    return PolicyBuilder().store(Store([ca_cert])).time(at).build_client_verifier()


def _eku(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def _load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- the CA -----------------------------------------------------------------


def test_ca_is_a_p256_ca_that_can_only_sign_leaves(ca: pki.CertificateAuthority) -> None:
    cert = ca.certificate
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    assert constraints.value.path_length == 0
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert usage.crl_sign
    assert not usage.digital_signature
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert cert.issuer == cert.subject
    public = cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert isinstance(public.curve, ec.SECP256R1)
    cert.verify_directly_issued_by(cert)


# --- vehicle certificates -----------------------------------------------------


def test_vehicle_cert_has_vin_cn_p256_key_and_client_auth_only(
    ca: pki.CertificateAuthority,
) -> None:
    identity = pki.build_vehicle_certificate(ca, VIN, now=NOW)
    cert = identity.certificate

    assert identity.common_name == VIN
    assert isinstance(identity.private_key.curve, ec.SECP256R1)
    assert identity.private_key.public_key() == cert.public_key()
    assert _eku(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ca_ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest


def test_vehicle_cert_is_valid_one_year_from_now_by_default(
    ca: pki.CertificateAuthority,
) -> None:
    cert = pki.build_vehicle_certificate(ca, VIN, now=NOW).certificate

    assert cert.not_valid_before_utc == NOW
    assert cert.not_valid_after_utc == NOW + timedelta(days=365)


def test_vehicle_cert_chain_verifies_against_the_ca(ca: pki.CertificateAuthority) -> None:
    cert = pki.build_vehicle_certificate(ca, VIN, now=NOW).certificate

    verified = _client_verifier(ca.certificate).verify(cert, [])

    assert verified.chain == [cert, ca.certificate]
    assert verified.subjects == [x509.UniformResourceIdentifier(f"urn:v2c:vehicle:{VIN}")]


def test_expired_vehicle_cert_fails_verification(ca: pki.CertificateAuthority) -> None:
    cert = pki.build_vehicle_certificate(
        ca, VIN, now=NOW, valid_from=NOW - timedelta(days=400)
    ).certificate

    assert cert.not_valid_after_utc < NOW
    with pytest.raises(VerificationError):
        _client_verifier(ca.certificate).verify(cert, [])


def test_not_yet_valid_vehicle_cert_fails_verification(ca: pki.CertificateAuthority) -> None:
    cert = pki.build_vehicle_certificate(
        ca, VIN, now=NOW, valid_from=NOW + timedelta(days=1)
    ).certificate

    assert cert.not_valid_before_utc > NOW
    with pytest.raises(VerificationError):
        _client_verifier(ca.certificate).verify(cert, [])
    _client_verifier(ca.certificate, NOW + timedelta(days=2)).verify(cert, [])


def test_cert_from_a_foreign_ca_fails_verification(ca: pki.CertificateAuthority) -> None:
    foreign = pki.create_ca(common=pki.FOREIGN_CA_COMMON_NAME, now=NOW)
    cert = pki.build_vehicle_certificate(foreign, VIN, now=NOW).certificate

    with pytest.raises(VerificationError):
        _client_verifier(ca.certificate).verify(cert, [])


@pytest.mark.parametrize(
    "bad",
    [
        "1HGBH41JXMN109186",  # no prefix
        "VIN-1HGBH41JXMN10918",  # 16 characters
        "VIN-1HGBH41JXMN1091867",  # 18 characters
        "VIN-1hgbh41jxmn109186",  # lower case
        "VIN-1HGBH41JXMN10918O",  # O is not a VIN character
        "VIN-../../../etc/passwd",  # would escape out_dir as a file name
        "",
    ],
)
def test_invalid_vehicle_id_is_rejected_with_a_typed_error(
    ca: pki.CertificateAuthority, bad: str
) -> None:
    with pytest.raises(InvalidInput):
        pki.build_vehicle_certificate(ca, bad, now=NOW)


def test_non_positive_validity_is_rejected(ca: pki.CertificateAuthority) -> None:
    with pytest.raises(InvalidInput):
        pki.build_vehicle_certificate(ca, VIN, now=NOW, valid_days=0)


def test_naive_clock_is_rejected(ca: pki.CertificateAuthority) -> None:
    with pytest.raises(InvalidInput):
        pki.build_vehicle_certificate(ca, VIN, now=datetime(2030, 1, 1))


# --- service and broker certificates -------------------------------------------


def test_service_cert_is_a_client_identity_named_by_its_cn(
    ca: pki.CertificateAuthority,
) -> None:
    default = pki.build_service_certificate(ca, now=NOW)
    custom = pki.build_service_certificate(ca, "fleet-api", now=NOW)

    assert default.common_name == "v2c-gateway"
    assert custom.common_name == "fleet-api"
    assert _eku(default.certificate) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    _client_verifier(ca.certificate).verify(custom.certificate, [])


@pytest.mark.parametrize("bad", ["", "a/b", "v2c+gw", "#", VIN, "with space"])
def test_service_name_that_could_subvert_the_acl_is_rejected(
    ca: pki.CertificateAuthority, bad: str
) -> None:
    with pytest.raises(InvalidInput):
        pki.build_service_certificate(ca, bad, now=NOW)


@pytest.mark.parametrize(
    "name",
    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
)
def test_broker_cert_verifies_as_server_for_localhost_and_loopback(
    ca: pki.CertificateAuthority, name: x509.DNSName | x509.IPAddress
) -> None:
    cert = pki.build_server_certificate(ca, now=NOW).certificate

    verifier = PolicyBuilder().store(Store([ca.certificate])).time(NOW)
    verifier.build_server_verifier(name).verify(cert, [])
    assert _eku(cert) == [ExtendedKeyUsageOID.SERVER_AUTH]


# --- no key material in repr ------------------------------------------------------


def test_repr_never_shows_private_key_material(ca: pki.CertificateAuthority) -> None:
    identity = pki.build_vehicle_certificate(ca, VIN, now=NOW)
    secret = identity.private_key.private_numbers().private_value
    pem = identity.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    body = "".join(pem.splitlines()[1:-1])

    for text in (repr(identity), repr(ca), str(identity), repr([identity])):
        assert "PRIVATE" not in text
        assert "private_key" not in text
        assert str(secret) not in text
        assert format(secret, "x") not in text
        assert body[:24] not in text
    assert VIN in repr(identity)


# --- files --------------------------------------------------------------------------


def test_init_pki_writes_the_documented_layout(tmp_path: Path) -> None:
    paths = pki.init_pki(tmp_path / "pki", now=NOW)

    assert paths == pki.PkiPaths.for_dir(tmp_path / "pki")
    for name in (
        *("ca.pem", "ca.key", "service-ca.pem", "service-ca.key", "server.pem", "server.key"),
        *("service.pem", "service.key", "admin.pem", "admin.key"),
    ):
        assert (tmp_path / "pki" / name).is_file()
    assert paths.vehicles_dir.is_dir()
    service_ca = _load_cert(paths.service_ca_cert)
    for identity, name in ((paths.service, "v2c-gateway"), (paths.admin, "v2c-admin")):
        assert identity.ca == paths.service_ca_cert
        _client_verifier(service_ca).verify(_load_cert(identity.cert), [])
        assert pki.common_name(_load_cert(identity.cert)) == name
        # the fleet CA (the vehicle listener's) does not vouch for a service
        with pytest.raises(VerificationError):
            _client_verifier(_load_cert(paths.ca_cert)).verify(_load_cert(identity.cert), [])
    _load_cert(paths.server.cert).verify_directly_issued_by(_load_cert(paths.ca_cert))
    assert not list((tmp_path / "pki").glob(".*.tmp"))


def test_init_pki_upgrades_a_directory_from_before_the_service_ca_in_place(
    tmp_path: Path,
) -> None:
    # Given a PKI directory as older versions made it: one CA for everything
    root = tmp_path / "pki"
    ca = pki.init_ca(root, now=NOW)
    layout = pki.PkiPaths.for_dir(root)
    old_service = pki.build_service_certificate(ca, now=NOW)
    pki.write_identity(old_service, layout.service.cert, layout.service.key)
    vehicle = pki.issue_vehicle_cert(root, VIN, now=NOW)
    kept = [p.read_bytes() for p in (layout.ca_cert, layout.ca_key, vehicle.cert)]

    # When it is initialised again
    paths = pki.init_pki(root, now=NOW + timedelta(days=1))

    # Then the fleet CA and the vehicles stay, and the service identity moved CA
    assert [p.read_bytes() for p in (paths.ca_cert, paths.ca_key, vehicle.cert)] == kept
    service = _load_cert(paths.service.cert)
    service.verify_directly_issued_by(_load_cert(paths.service_ca_cert))
    assert pki.common_name(service) == "v2c-gateway"
    assert paths.admin.cert.is_file()
    assert paths.vehicle_ids() == [VIN]


def test_key_files_are_0600_and_certs_0644_even_with_an_open_umask(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        paths = pki.init_pki(tmp_path / "pki", now=NOW)
        vehicle = pki.issue_vehicle_cert(paths.root, VIN, tmp_path / "out", now=NOW)
    finally:
        os.umask(previous)

    for key in (
        *(paths.ca_key, paths.service_ca_key, paths.server.key, paths.service.key),
        *(paths.admin.key, vehicle.key),
    ):
        assert _mode(key) == 0o600, key
    for cert in (
        *(paths.ca_cert, paths.service_ca_cert, paths.server.cert, paths.service.cert),
        *(paths.admin.cert, vehicle.cert),
    ):
        assert _mode(cert) == 0o644, cert


def test_key_file_replaced_over_a_world_readable_one_is_0600(tmp_path: Path) -> None:
    # Given a stale key file someone left world-readable
    stale = tmp_path / "out" / f"{VIN}.key"
    stale.parent.mkdir()
    stale.write_text("stale")
    stale.chmod(0o644)
    pki.init_pki(tmp_path / "pki", now=NOW)

    # When a new key is issued over it
    paths = pki.issue_vehicle_cert(tmp_path / "pki", VIN, tmp_path / "out", now=NOW)

    # Then the file is a new 0600 inode holding the new key
    assert _mode(paths.key) == 0o600
    assert paths.key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_init_pki_twice_keeps_the_ca_and_the_certificates(tmp_path: Path) -> None:
    paths = pki.init_pki(tmp_path / "pki", now=NOW)
    files = (
        *(paths.ca_cert, paths.ca_key, paths.service_ca_cert, paths.server.cert),
        *(paths.service.key, paths.admin.cert),
    )
    before = [p.read_bytes() for p in files]

    pki.init_pki(tmp_path / "pki", now=NOW + timedelta(days=1))

    assert [p.read_bytes() for p in files] == before


def test_init_pki_with_force_replaces_the_ca_and_reissues(tmp_path: Path) -> None:
    paths = pki.init_pki(tmp_path / "pki", now=NOW)
    old_ca = paths.ca_cert.read_bytes()
    old_server = paths.server.cert.read_bytes()

    pki.init_pki(tmp_path / "pki", now=NOW, force=True)

    assert paths.ca_cert.read_bytes() != old_ca
    assert paths.server.cert.read_bytes() != old_server
    _load_cert(paths.server.cert).verify_directly_issued_by(_load_cert(paths.ca_cert))


def test_init_pki_reissues_an_expired_broker_cert_but_keeps_the_ca(tmp_path: Path) -> None:
    paths = pki.init_pki(tmp_path / "pki", now=NOW)
    old_ca = paths.ca_cert.read_bytes()
    later = NOW + timedelta(days=400)

    pki.init_pki(tmp_path / "pki", now=later)

    assert paths.ca_cert.read_bytes() == old_ca
    assert _load_cert(paths.server.cert).not_valid_before_utc == later


def test_init_pki_reissues_the_service_cert_under_a_new_name(tmp_path: Path) -> None:
    paths = pki.init_pki(tmp_path / "pki", now=NOW)

    pki.init_pki(tmp_path / "pki", now=NOW, service_name="v2c-cloud")

    assert pki.common_name(_load_cert(paths.service.cert)) == "v2c-cloud"


def test_init_pki_refuses_a_half_present_ca(tmp_path: Path) -> None:
    paths = pki.init_pki(tmp_path / "pki", now=NOW)
    paths.ca_key.unlink()

    with pytest.raises(NotFound):
        pki.init_pki(tmp_path / "pki", now=NOW)
    pki.init_pki(tmp_path / "pki", now=NOW, force=True)
    assert paths.ca_key.is_file()


def test_load_ca_rejects_a_key_that_does_not_match_the_certificate(tmp_path: Path) -> None:
    ours = pki.init_pki(tmp_path / "pki", now=NOW)
    other = pki.init_foreign_ca(tmp_path / "foreign", now=NOW)
    ours.ca_key.write_bytes(other.ca_key.read_bytes())

    with pytest.raises(ValidationFailed):
        pki.load_ca(tmp_path / "pki")


def test_issue_without_a_ca_says_to_run_init(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="pki init"):
        pki.issue_vehicle_cert(tmp_path / "nothing", VIN, tmp_path / "out", now=NOW)


def test_issue_invalid_vin_writes_nothing(tmp_path: Path) -> None:
    pki.init_pki(tmp_path / "pki", now=NOW)

    with pytest.raises(InvalidInput):
        pki.issue_vehicle_cert(tmp_path / "pki", "VIN-BAD", tmp_path / "out", now=NOW)
    assert not (tmp_path / "out").exists()


def test_issued_vehicle_files_round_trip_and_chain_to_the_pki_ca(tmp_path: Path) -> None:
    pki.init_pki(tmp_path / "pki", now=NOW)

    paths = pki.issue_vehicle_cert(tmp_path / "pki", VIN, now=NOW, valid_days=30)

    assert paths.cert == tmp_path / "pki" / "vehicles" / f"{VIN}.pem"
    assert paths.ca == tmp_path / "pki" / "ca.pem"
    cert = _load_cert(paths.cert)
    key = serialization.load_pem_private_key(paths.key.read_bytes(), password=None)
    assert key.public_key() == cert.public_key()
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=30)
    _client_verifier(_load_cert(paths.ca)).verify(cert, [])


def test_foreign_ca_issues_same_cn_certs_the_stack_ca_refuses(tmp_path: Path) -> None:
    ours = pki.init_pki(tmp_path / "pki", now=NOW)
    pki.init_foreign_ca(tmp_path / "foreign", now=NOW)

    paths = pki.issue_vehicle_cert(tmp_path / "foreign", VIN, tmp_path / "out", now=NOW)

    cert = _load_cert(paths.cert)
    assert pki.common_name(cert) == VIN
    with pytest.raises(VerificationError):
        _client_verifier(_load_cert(ours.ca_cert)).verify(cert, [])


def test_issue_service_cert_writes_under_services(tmp_path: Path) -> None:
    pki.init_pki(tmp_path / "pki", now=NOW)

    paths = pki.issue_service_cert(tmp_path / "pki", "fleet-api", now=NOW)

    assert paths.cert == tmp_path / "pki" / "services" / "fleet-api.pem"
    assert pki.common_name(_load_cert(paths.cert)) == "fleet-api"
    assert paths.ca == tmp_path / "pki" / "service-ca.pem"
    _load_cert(paths.cert).verify_directly_issued_by(_load_cert(paths.ca))


# --- what mosquitto's OpenSSL does with them ------------------------------------------


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, host: str) -> dict[str, Any]:
    """Run a TLS handshake over memory buffers; return the client cert the server saw."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=host)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, end in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            peer = server.getpeercert()
            assert peer is not None
            return dict(peer)
    raise AssertionError("handshake did not complete")


def _broker_context(paths: pki.PkiPaths, *, services: bool = False) -> ssl.SSLContext:
    """Like mosquitto with cafile/certfile/keyfile and `require_certificate true`: the
    vehicle listener (fleet CA) or, with `services`, the service listener (service CA)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(paths.server.cert, paths.server.key)
    ctx.load_verify_locations(paths.service_ca_cert if services else paths.ca_cert)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    return ctx


def _vehicle_context(ca_cert: Path, cert: pki.CertPaths) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca_cert)
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    ctx.load_cert_chain(cert.cert, cert.key)
    return ctx


def _subject_cn(peer: dict[str, Any]) -> str:
    return str(next(v for rdn in peer["subject"] for k, v in rdn if k == "commonName"))


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_openssl_accepts_vehicle_cert_and_reads_vin_as_identity(tmp_path: Path, host: str) -> None:
    # OpenSSL checks validity against the real clock, so these certs use it.
    paths = pki.init_pki(tmp_path / "pki")
    vehicle = pki.issue_vehicle_cert(paths.root, VIN, tmp_path / "car")

    peer = _handshake(_broker_context(paths), _vehicle_context(paths.ca_cert, vehicle), host)

    assert _subject_cn(peer) == VIN  # what use_identity_as_username makes the user name


def test_openssl_accepts_service_cert_with_its_name_as_identity(tmp_path: Path) -> None:
    paths = pki.init_pki(tmp_path / "pki")

    peer = _handshake(
        _broker_context(paths, services=True),
        _vehicle_context(paths.ca_cert, paths.service),
        "localhost",
    )

    assert _subject_cn(peer) == "v2c-gateway"


def test_each_listener_refuses_the_other_kind_of_client_certificate(tmp_path: Path) -> None:
    paths = pki.init_pki(tmp_path / "pki")
    vehicle = pki.issue_vehicle_cert(paths.root, VIN, tmp_path / "car")

    # (OpenSSL sends the client's chain up to the CA it trusts: the other CA is
    # then "self-signed in the chain", not "unknown issuer"; refused either way.)
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        _handshake(
            _broker_context(paths, services=True),
            _vehicle_context(paths.ca_cert, vehicle),
            "localhost",
        )
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        _handshake(
            _broker_context(paths), _vehicle_context(paths.ca_cert, paths.service), "localhost"
        )


@pytest.mark.parametrize(
    ("shift", "why"),
    [(timedelta(days=-400), "has expired"), (timedelta(days=2), "is not yet valid")],
    ids=["expired", "not_yet_valid"],
)
def test_openssl_refuses_vehicle_cert_outside_its_window(
    tmp_path: Path, shift: timedelta, why: str
) -> None:
    paths = pki.init_pki(tmp_path / "pki")
    start = datetime.now(UTC) + shift
    vehicle = pki.issue_vehicle_cert(paths.root, VIN, tmp_path / "car", valid_from=start)

    with pytest.raises(ssl.SSLCertVerificationError, match=why):
        _handshake(_broker_context(paths), _vehicle_context(paths.ca_cert, vehicle), "localhost")


def test_openssl_refuses_vehicle_cert_from_a_foreign_ca(tmp_path: Path) -> None:
    paths = pki.init_pki(tmp_path / "pki")
    pki.init_foreign_ca(tmp_path / "foreign")
    vehicle = pki.issue_vehicle_cert(tmp_path / "foreign", VIN, tmp_path / "car")

    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        _handshake(_broker_context(paths), _vehicle_context(paths.ca_cert, vehicle), "localhost")
