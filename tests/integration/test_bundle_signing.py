"""bundle_sign and cache_install's trust list through the real ansible-playbook, in one play, and the runs that repeat a
module as the module's own process: signing is idempotent and
honours check mode, a bundle over http is verified before any tar is requested, and GnuPG signs and gpgv verifies.
Each model's OpenSSF model-signing signature travels with the bundle to beside the installed model, where the real
model-signing verifier accepts the model directory, and refuses it once a file changed; a model installed before
without it gets it from a later bundle that carries it, its files untouched."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from integration.test_cache_install import BundleServer

from support.bundles import ModelSpec, write_bundle
from support.leak_scan import Secrets
from support.module_process import run_modules
from support.playbook import run_tasks
from support.signing import GpgKey, allowed_signers, ec_key, ec_key_material, ssh_key

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not (shutil.which("ssh-keygen") and shutil.which("gpg") and shutil.which("gpgv")),
                                 reason="needs ssh-keygen (openssh-client), gpg (gnupg) and gpgv")]

RELEASE = "release@example.com"
SPEC = ModelSpec("o/signed", {"config.json": b'{"a": 1}', "weights/w.bin": b"w" * 4096, ".gitattributes": b"*.bin filter=lfs\n"})
MODEL_SIGNING = Path(sys.executable).with_name("model_signing")


def model_signing_verify(model_dir: Path, public_key: Path) -> subprocess.CompletedProcess:
    """The model-signing verifier, as a serving stack runs it on an installed model and the signature beside it."""
    return subprocess.run([str(MODEL_SIGNING), "verify", "key", "--public_key", str(public_key), "--signature", f"{model_dir}.sig",
                           str(model_dir)], capture_output=True, text=True, timeout=120, check=False)


def test_sign_and_install_only_what_verifies(tmp_path):
    key = ssh_key(tmp_path / "keys" / "release")
    trust = {"allowed_signers": str(allowed_signers(tmp_path / "allowed_signers", {RELEASE: key})), "identities": [RELEASE]}
    signed, unsigned = write_bundle(tmp_path / "signed", [SPEC]), write_bundle(tmp_path / "unsigned", [SPEC])
    model_key = ec_key(tmp_path / "keys" / "model-signing.pem")
    sign_manifest_only = {"modelseed.fleet.bundle_sign": {"path": str(signed), "key": str(key)}}
    sign = {"modelseed.fleet.bundle_sign": {**sign_manifest_only["modelseed.fleet.bundle_sign"], "model_signing_key": str(model_key)}}
    gpg = GpgKey.create(tmp_path / "gnupg", f"Release <{RELEASE}>")
    gpg_bundle = write_bundle(tmp_path / "gpg-bundle", [SPEC])
    gpg_sign = {"modelseed.fleet.bundle_sign": {"path": str(gpg_bundle), "method": "gpg", "key": gpg.fingerprint, "gpg_homedir": str(gpg.home)}}
    gpg_trust = {"method": "gpg", "keyring": str(gpg.export(tmp_path / "trusted.gpg")), "identities": [gpg.fingerprint]}
    try:
        with BundleServer(signed) as good, BundleServer(unsigned) as bare:
            # Each module's first run goes through ansible-playbook; the runs that repeat a module are its own process.
            run = run_tasks([
                {**sign, "check_mode": True},
                sign,
                {"modelseed.fleet.cache_install": {"src": good.url, "cache_dir": str(tmp_path / "cache"), "layout": "all", "trust": trust}},
                {**sign, "vars": {"ansible_python_interpreter": "/usr/bin/python3"}},
            ])
            repeated = run_modules([
                gpg_sign,
                {"modelseed.fleet.cache_install": {"src": str(gpg_bundle), "cache_dir": str(tmp_path / "gpg-cache"), "layout": "all",
                                                   "trust": gpg_trust}},
                {**sign_manifest_only, "check_mode": True},
                sign,
                {"modelseed.fleet.cache_install": {"src": bare.url, "cache_dir": str(tmp_path / "refused"), "layout": "all", "trust": trust}},
                {"modelseed.fleet.cache_install": {"src": bare.url, "cache_dir": str(tmp_path / "trusting"), "layout": "all"}},
                gpg_sign,
                {"modelseed.fleet.cache_install": {"src": str(gpg_bundle), "cache_dir": str(tmp_path / "gpg-other"), "layout": "all",
                                                   "trust": {**gpg_trust, "namespace": "other"}}},
                {"modelseed.fleet.cache_install": {"src": str(signed), "cache_dir": str(tmp_path / "snapshots"), "layout": "snapshots",
                                                   "trust": trust}},
            ], tmp_path)
        # A node that holds the model already, installed from a bundle without model signatures, gets the signature
        # of a bundle that carries one: in check mode only said, then written (the files untouched), then nothing to do;
        # a signature of another content there is replaced.
        trusting, beside = tmp_path / "trusting", tmp_path / "trusting/models/o/signed.sig"
        add_signature = {"modelseed.fleet.cache_install": {"src": str(signed), "cache_dir": str(trusting), "layout": "all"}}
        weights_inode = (trusting / "models/o/signed/weights/w.bin").stat().st_ino
        sig_check = run_modules([{**add_signature, "check_mode": True}], tmp_path)[0]
        assert not beside.exists()
        sig_added, sig_kept = run_modules([add_signature, add_signature], tmp_path)
        assert beside.read_bytes() == Path(signed / "o--signed--master.sig").read_bytes()
        beside.write_bytes(b"another signature")
        sig_replaced = run_modules([add_signature], tmp_path)[0]
    finally:
        gpg.close()
    check, first, installed, without_package = run.results
    gpg_signed, gpg_installed, check_again, again, refused, without_trust, gpg_again, gpg_other_namespace, snapshots = repeated
    assert [r["changed"] for r in (check, first, check_again, again)] == [True, True, False, False], (run.results[:2], repeated[2:4])
    assert check["msg"].startswith("would sign manifest.json (sha256 ") and first["msg"].startswith("signed manifest.json (sha256 ")
    assert again["msg"].startswith("manifest.json.sig is signed already by ssh key ")
    assert (signed / "manifest.json.sig").read_text().startswith("-----BEGIN SSH SIGNATURE-----")
    model_sig = str(signed / "o--signed--master.sig")
    assert [r["model_signatures"] for r in (check, first, again)] == [
        [{"model": "o/signed", "revision": "master", "path": model_sig, "changed": changed}] for changed in (True, True, False)]
    assert check_again["model_signatures"] == [] and "model-signing" not in check_again["msg"], check_again
    assert "wrote model-signing signature(s) of o/signed@master" in first["msg"], first

    assert not installed.get("failed") and installed["signer"].startswith(f"{RELEASE} (ssh-ed25519 key SHA256:"), installed
    assert f"manifest.json signed by {RELEASE}" in installed["msg"]
    assert (tmp_path / "cache/models/o/signed/config.json").read_bytes() == b'{"a": 1}'
    # Refused before any tar was asked for, and before the cache directory was made.
    assert refused["failed"] and "the bundle is not signed (it has no manifest.json.sig)" in refused["msg"], refused
    assert not (tmp_path / "refused").exists()
    assert [name for name, _range, _status in bare.log if name.endswith(".tar")] == ["o--signed--master.tar"]  # the trusting install's
    assert not without_trust.get("failed") and without_trust["signer"] is None

    assert gpg_signed["changed"] and not gpg_again["changed"], (gpg_signed, gpg_again)
    assert (gpg_bundle / "manifest.json.sig").read_text().startswith("-----BEGIN PGP SIGNATURE-----")
    assert gpg_installed["signer"] == f"Release <{RELEASE}> (OpenPGP key {gpg.fingerprint})", gpg_installed
    assert gpg_other_namespace["failed"] and "was made for namespace 'modelseed-bundle'" in gpg_other_namespace["msg"], gpg_other_namespace
    assert not (tmp_path / "gpg-other").exists()

    # Each installed model has its model-signing signature beside it, which the real verifier accepts over the
    # directory as installed (.msc/.mdl/.mv written for the layout, .gitattributes left out), and refuses once a file changed.
    assert not snapshots.get("failed"), snapshots
    for model_dir in (tmp_path / "cache/models/o/signed", tmp_path / "snapshots/models/o--signed/snapshots/master"):
        assert Path(f"{model_dir}.sig").read_bytes() == Path(model_sig).read_bytes()
    accepted = model_signing_verify(tmp_path / "cache/models/o/signed", model_key.with_suffix(".pub"))
    assert accepted.returncode == 0 and "Verification succeeded" in accepted.stdout, accepted
    assert sorted(p.name for p in (tmp_path / "cache/models/o/signed").iterdir()) == [".gitattributes", ".mdl", ".msc", ".mv", "config.json",
                                                                                      "weights"]
    (tmp_path / "cache/models/o/signed/config.json").write_bytes(b'{"a": 2}')
    refused_model = model_signing_verify(tmp_path / "cache/models/o/signed", model_key.with_suffix(".pub"))
    assert refused_model.returncode == 1 and "Signature mismatch: ['Hash mismatch for \\'config.json\\'" in refused_model.stderr, refused_model
    assert without_package["failed"] and "model-signing" in without_package["msg"], without_package
    assert (sig_check["changed"], sig_added["changed"], sig_kept["changed"], sig_replaced["changed"]) == (True, True, False, True)
    assert sig_check["msg"].startswith("would fix 1 model(s): o/signed@master (model-signing signature missing)"), sig_check
    assert sig_added["msg"].startswith("fixed 1 model(s): o/signed@master (model-signing signature missing)"), sig_added
    assert [m["action"] for m in (*sig_check["models"], *sig_added["models"], *sig_kept["models"])] == ["fix", "fix", "none"]
    assert "o/signed@master (model-signing signature differs from the bundle's)" in sig_replaced["msg"], sig_replaced
    assert beside.read_bytes() == Path(model_sig).read_bytes() and sig_replaced["bytes_installed"] == 0
    assert (trusting / "models/o/signed/weights/w.bin").stat().st_ino == weights_inode
    # The model-signing key is read by the signing host only: none of it in any output or file of the run.
    secrets = Secrets(**ec_key_material(model_key))
    assert secrets.in_texts({"stdout": run.stdout, "stderr": run.stderr, "results": json.dumps(
        [*run.results, *repeated, sig_check, sig_added, sig_kept, sig_replaced])}) == []
    assert secrets.in_trees(tmp_path, skip=(tmp_path / "keys",)) == []
