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
