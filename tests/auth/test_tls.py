"""ssl_for: the TLS setting the credentials asked for, as aiohttp's connector takes it."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from bulktag.auth.base import CredentialsError
from bulktag.auth.tls import ssl_for


@pytest.mark.parametrize("verify", [True, False])
def test_booleans_pass_through(verify: bool) -> None:
    assert verify is ssl_for(verify)


def test_a_ca_bundle_becomes_a_verifying_context() -> None:
    bundle = ssl.get_default_verify_paths().cafile
    if bundle is None or not Path(bundle).is_file():
        pytest.skip("no system CA bundle to load")
    context = ssl_for(bundle)
    assert isinstance(context, ssl.SSLContext)
    assert ssl.CERT_REQUIRED == context.verify_mode


def test_a_missing_ca_bundle_is_a_credentials_error(tmp_path: Path) -> None:
    missing = tmp_path / "ca.pem"
    with pytest.raises(CredentialsError) as info:
        ssl_for(str(missing))
    assert f"cannot load the CA bundle {missing}: No such file or directory" == str(info.value)


def test_a_file_that_is_not_a_ca_bundle_is_a_credentials_error(tmp_path: Path) -> None:
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate\n", encoding="utf-8")
    with pytest.raises(CredentialsError) as info:
        ssl_for(str(junk))
    assert str(info.value).startswith(f"cannot load the CA bundle {junk}: ")


def test_a_missing_client_certificate_is_a_credentials_error(tmp_path: Path) -> None:
    missing = tmp_path / "client.pem"
    with pytest.raises(CredentialsError) as info:
        ssl_for(True, str(missing))
    assert str(info.value).startswith(f"cannot load the client certificate {missing}: ")


def self_signed(tmp_path: Path) -> tuple[str, str]:
    """A client certificate and its key, in two PEM files."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bulktag-test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "client.pem", tmp_path / "client.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


@pytest.mark.parametrize(
    ("verify", "mode"), [(False, ssl.CERT_NONE), (True, ssl.CERT_REQUIRED)], ids=["insecure", "ca"]
)
def test_a_client_certificate_is_loaded_and_the_verification_choice_kept(
    tmp_path: Path, verify: bool, mode: ssl.VerifyMode
) -> None:
    context = ssl_for(verify, self_signed(tmp_path))
    assert isinstance(context, ssl.SSLContext)
    assert mode == context.verify_mode
    assert verify == context.check_hostname
