"""A throwaway certificate authority and a server certificate for 127.0.0.1 and localhost, or for another address.

SDKs up to 1.37 reach a hub only over https (``MODELSCOPE_DOMAIN``); they trust the CA through
``REQUESTS_CA_BUNDLE``. Made with the ``openssl`` command line, reused when already there.

    python -m support.tls DIRECTORY ADDRESS   # a fleet node's nginx (molecule's pull scenario)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

SERVER_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = {names}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # CA certificate, for REQUESTS_CA_BUNDLE
    cert: Path  # server certificate
    key: Path  # server key

    @property
    def pair(self) -> tuple[Path, Path]:
        return self.cert, self.key


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def ensure_tls(directory: Path | str, address: str = "127.0.0.1") -> TlsFiles:
    """CA and server certificate for ``address`` in ``directory``, created once (in a scratch dir, then renamed in)."""
    directory = Path(directory)
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    if all(p.is_file() for p in (files.ca, files.cert, files.key)):
        return files
    directory.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}-"))
    try:
        work.chmod(0o755)  # clients running as other users read the CA certificate
        curve = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
        _openssl(
            "req", "-x509", *curve, "-keyout", "ca.key", "-out", "ca.pem", "-days", "3650", "-subj", "/CN=mshub test CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            cwd=work,
        )  # fmt: skip
        _openssl("req", *curve, "-keyout", "server.key", "-out", "server.csr", "-subj", f"/CN={address}", cwd=work)
        names = "IP:127.0.0.1, DNS:localhost" if address == "127.0.0.1" else f"IP:{address}"
        (work / "server.ext").write_text(SERVER_EXTENSIONS.format(names=names))
        _openssl(
            "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "3650", "-extfile", "server.ext", "-out", "server.pem",
            cwd=work,
        )  # fmt: skip
        try:
            work.rename(directory)
        except OSError:  # made meanwhile by someone else, or left half-done: keep a complete one
            if not all(p.is_file() for p in (files.ca, files.cert, files.key)):
                shutil.rmtree(directory, ignore_errors=True)
                work.rename(directory)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return files


if __name__ == "__main__":
    print(ensure_tls(sys.argv[1], sys.argv[2]))
