"""Signing keys for tests, made with the real tools: OpenSSH keys and allowed_signers files, GnuPG keys and keyrings.

    key = ssh_key(tmp_path / "release")                   # release, release.pub
    allowed = allowed_signers(tmp_path / "allowed", {"release@example.com": key})
    gpg = GpgKey.create(tmp_path / "gnupg", "Release <release@example.com>")
    gpg.export(tmp_path / "keyring.gpg")
    ec = ec_key(tmp_path / "model-signing.pem")          # a P-256 key for model-signing, and model-signing.pub

``key_material(key)`` gives what must never leave the key's file, for the leak scan.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key


def ssh_key(path: Path, comment: str = "modelseed test key") -> Path:
    """A new ed25519 key without a passphrase at ``path`` (and ``path.pub``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True, capture_output=True)
    return path


def ec_key(path: Path) -> Path:
    """A new P-256 private key (PEM, no passphrase) at ``path``, its public key (PEM) at ``path`` with suffix ``.pub``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    private = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    path.with_suffix(".pub").write_bytes(private.public_key().public_bytes(serialization.Encoding.PEM,
                                                                           serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def ec_key_material(key: Path) -> dict[str, str | bytes]:
    """The secret parts of an ec_key: its private scalar and each line of the PEM body, for support.leak_scan.Secrets."""
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    body = [line for line in key.read_text().splitlines() if line and not line.startswith("-----")]
    secrets: dict[str, str | bytes] = {"ec private scalar": private.private_numbers().private_value.to_bytes(32, "big")}
    secrets.update((f"ec key file line {number}", line) for number, line in enumerate(body, 1) if len(line) >= 16)
    return secrets


def public_key(key: Path) -> str:
    """``ssh-ed25519 AAAA...`` of ``key``."""
    return " ".join(Path(f"{key}.pub").read_text().split()[:2])


def allowed_signers(path: Path, signers: dict[str, Path], namespaces: str | None = None) -> Path:
    """An allowed_signers file: one line per principal and key, optionally limited to ``namespaces``."""
    option = f' namespaces="{namespaces}"' if namespaces else ""
    path.write_text("".join(f"{principal}{option} {public_key(key)}\n" for principal, key in signers.items()))
    return path


def ssh_sign(key: Path, data: bytes, namespace: str = "modelseed-bundle") -> bytes:
    return subprocess.run(["ssh-keygen", "-Y", "sign", "-f", str(key), "-n", namespace, "-"], input=data, check=True,
                          capture_output=True).stdout


def key_material(key: Path) -> dict[str, str | bytes]:
    """The secret parts of an OpenSSH private key, for support.leak_scan.Secrets: the private scalar (found raw, in
    hex and in base64 at any alignment) and each line of the key file's base64 body after the first (which holds
    only the format's header and the start of the public key)."""
    private = load_ssh_private_key(key.read_bytes(), password=None)
    body = [line for line in key.read_text().splitlines() if line and not line.startswith("-----")]
    secrets: dict[str, str | bytes] = {"private scalar": private.private_bytes_raw()}
    secrets.update((f"key file line {number}", line) for number, line in enumerate(body[1:], 2) if len(line) >= 16)
    return secrets


@dataclass
class GpgKey:
    home: Path
    fingerprint: str

    @classmethod
    def create(cls, home: Path, uid: str) -> GpgKey:
        """A new ed25519 signing key without a passphrase in the GnuPG home ``home``."""
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        cls._gpg(home, "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never")
        listing = cls._gpg(home, "--with-colons", "--list-keys", uid)
        fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
        return cls(home, fingerprint)

    def export(self, path: Path) -> Path:
        self._gpg(self.home, "--export", "--output", str(path), self.fingerprint)
        return path

    def sign(self, data: bytes, namespace: str | None = "modelseed-bundle") -> bytes:
        notation = ["--sig-notation", f"namespace@modelseed.fleet={namespace}"] if namespace else []
        return subprocess.run(["gpg", "--batch", "--homedir", str(self.home), "--local-user", self.fingerprint, *notation,
                               "--detach-sign", "--output", "-", "-"], input=data, check=True, capture_output=True).stdout

    def close(self) -> None:
        """Stop the gpg-agent that gpg started for this home."""
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "gpg-agent"], check=False, capture_output=True)

    @staticmethod
    def _gpg(home: Path, *args: str) -> str:
        return subprocess.run(["gpg", "--batch", "--homedir", str(home), *args], check=True, capture_output=True, text=True).stdout
