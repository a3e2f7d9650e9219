"""bundle_sign and cache_install's trust list through the real ansible-playbook, in one play: signing is idempotent and
honours check mode, a bundle over http is verified before any tar is requested, and GnuPG signs and gpgv verifies."""

from __future__ import annotations

import shutil

import pytest
from integration.test_cache_install import BundleServer

from support.bundles import ModelSpec, write_bundle
from support.playbook import run_tasks
from support.signing import GpgKey, allowed_signers, ssh_key

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not (shutil.which("ssh-keygen") and shutil.which("gpg") and shutil.which("gpgv")),
                                 reason="needs ssh-keygen (openssh-client), gpg (gnupg) and gpgv")]

RELEASE = "release@example.com"
SPEC = ModelSpec("o/signed", {"config.json": b'{"a": 1}', "weights/w.bin": b"w" * 4096})


def test_sign_and_install_only_what_verifies(tmp_path):
    key = ssh_key(tmp_path / "keys" / "release")
    trust = {"allowed_signers": str(allowed_signers(tmp_path / "allowed_signers", {RELEASE: key})), "identities": [RELEASE]}
    signed, unsigned = write_bundle(tmp_path / "signed", [SPEC]), write_bundle(tmp_path / "unsigned", [SPEC])
    sign = {"modelseed.fleet.bundle_sign": {"path": str(signed), "key": str(key)}}
    gpg = GpgKey.create(tmp_path / "gnupg", f"Release <{RELEASE}>")
    gpg_bundle = write_bundle(tmp_path / "gpg-bundle", [SPEC])
    gpg_sign = {"modelseed.fleet.bundle_sign": {"path": str(gpg_bundle), "method": "gpg", "key": gpg.fingerprint, "gpg_homedir": str(gpg.home)}}
    gpg_trust = {"method": "gpg", "keyring": str(gpg.export(tmp_path / "trusted.gpg")), "identities": [gpg.fingerprint]}
    try:
        with BundleServer(signed) as good, BundleServer(unsigned) as bare:
            run = run_tasks([
                {**sign, "check_mode": True},
                sign,
                {**sign, "check_mode": True},
                sign,
                {"modelseed.fleet.cache_install": {"src": good.url, "cache_dir": str(tmp_path / "cache"), "layout": "all", "trust": trust}},
                {"modelseed.fleet.cache_install": {"src": bare.url, "cache_dir": str(tmp_path / "refused"), "layout": "all", "trust": trust}},
                {"modelseed.fleet.cache_install": {"src": bare.url, "cache_dir": str(tmp_path / "trusting"), "layout": "all"}},
                gpg_sign,
                gpg_sign,
                {"modelseed.fleet.cache_install": {"src": str(gpg_bundle), "cache_dir": str(tmp_path / "gpg-cache"), "layout": "all",
                                                   "trust": gpg_trust}},
                {"modelseed.fleet.cache_install": {"src": str(gpg_bundle), "cache_dir": str(tmp_path / "gpg-other"), "layout": "all",
                                                   "trust": {**gpg_trust, "namespace": "other"}}},
            ])
    finally:
        gpg.close()
    check, first, check_again, again, installed, refused, without_trust = run.results[:7]
    gpg_signed, gpg_again, gpg_installed, gpg_other_namespace = run.results[7:]
    assert [r["changed"] for r in (check, first, check_again, again)] == [True, True, False, False], run.results[:4]
    assert check["msg"].startswith("would sign manifest.json (sha256 ") and first["msg"].startswith("signed manifest.json (sha256 ")
    assert again["msg"].startswith("manifest.json.sig is signed already by ssh key ")
    assert (signed / "manifest.json.sig").read_text().startswith("-----BEGIN SSH SIGNATURE-----")

    assert not installed.get("failed") and installed["signer"].startswith(f"{RELEASE} (ssh-ed25519 key SHA256:"), installed
    assert f"manifest.json signed by {RELEASE}" in installed["msg"]
    assert (tmp_path / "cache/models/o/signed/config.json").read_bytes() == b'{"a": 1}'
    # Refused before any tar was asked for, and before the cache directory was made.
    assert refused["failed"] and "the bundle is not signed (it has no manifest.json.sig)" in refused["msg"], refused
    assert not (tmp_path / "refused").exists()
    assert [name for name, _range, _status in bare.log if name.endswith(".tar")] == ["o--signed--master.tar"]  # the trusting install's
    assert not without_trust.get("failed") and without_trust["signer"] is None

    assert gpg_signed["changed"] and not gpg_again["changed"], run.results[7:9]
    assert (gpg_bundle / "manifest.json.sig").read_text().startswith("-----BEGIN PGP SIGNATURE-----")
    assert gpg_installed["signer"] == f"Release <{RELEASE}> (OpenPGP key {gpg.fingerprint})", gpg_installed
    assert gpg_other_namespace["failed"] and "was made for namespace 'modelseed-bundle'" in gpg_other_namespace["msg"], gpg_other_namespace
    assert not (tmp_path / "gpg-other").exists()
