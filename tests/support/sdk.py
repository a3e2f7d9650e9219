"""Real ModelScope SDKs, one virtualenv per pinned version, driven against a test hub.

Virtualenvs are built from the system Python (``/usr/bin/python3``), not a pyenv one under /root,
so that other users and sandboxed nodes can run them. They live in ``<repo>/.cache/sdk/<version>``
(``MODELSEED_SDK_CACHE`` moves that) and are reused while their fingerprint matches.
Run their tools as ``<venv>/bin/python -m ...``: the venv is built elsewhere and renamed into place.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BASE_PYTHON = "/usr/bin/python3"
CONSTRAINTS = HERE / "sdk-constraints.txt"
JUDGE = HERE / "sdk_judge.py"
JUDGE_MARK = "JUDGE "

# One of each cache layout: hub/<o>/<n___> (1.15-1.22), models/<o>/<n___> (1.23-1.37),
# models/<o>--<n>/snapshots/<rev> (1.38+, downloads through modelscope-hub).
VERSIONS = ("1.15.0", "1.37.1", "1.40.2")

# 1.15.0 depends on datasets, scipy, pyarrow, oss2, ... none of which the hub download path imports.
# It is installed without them, plus what `import modelscope.hub.snapshot_download` needs.
SLIM_INSTALLS = {
    "1.15.0": "addict filelock gast packaging pandas python-dateutil pyyaml requests simplejson sortedcontainers tqdm urllib3 yapf".split(),
}
IMPORT_CHECK = "from modelscope.hub.snapshot_download import snapshot_download; from modelscope import snapshot_download"


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def cache_dir() -> Path:
    """Where the SDK virtualenvs live: tests run them as other users, so every parent must let others through.

    ``$MODELSEED_SDK_CACHE``, else ``.cache/sdk`` in the checkout, else (a checkout under a private
    directory such as /root) ``/var/tmp/modelseed-sdk``.
    """
    if os.environ.get("MODELSEED_SDK_CACHE"):
        return Path(os.environ["MODELSEED_SDK_CACHE"])
    if all(os.stat(path).st_mode & 0o001 for path in (REPO, *REPO.parents)):
        return REPO / ".cache" / "sdk"
    return Path("/var/tmp/modelseed-sdk")


@dataclass(frozen=True)
class SnapshotResult:
    ok: bool
    dir: str | None
    files: dict[str, dict] = field(default_factory=dict)  # path -> {"size", "sha256"}, all files under dir
    error: str | None = None
    returncode: int = 0
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class SdkEnv:
    version: str
    root: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def legacy(self) -> bool:
        """<= 1.37: the modelscope package downloads itself, reaches a hub only over https via MODELSCOPE_DOMAIN."""
        return version_tuple(self.version) < (1, 38)

    # snapshot_download of every pinned version takes local_files_only.
    has_local_files_only = True

    def env_for(self, hub, cache_root: Path | str, *, home: Path | str | None = None, ca_bundle: Path | str | None = None, extra: dict | None = None) -> dict:
        """A clean environment: nothing from this process leaks in, and HOME keeps ~/.cache and ~/.modelscope out of /root.

        ``home`` defaults to ``.sdk-home`` beside ``cache_root``; the SDKs store credentials and settings there.
        """
        home = home or Path(cache_root).parent / ".sdk-home"
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(home), "MODELSCOPE_CACHE": str(cache_root)}
        if self.legacy:
            if not hub.tls:
                raise ValueError(f"modelscope {self.version} reaches a hub only over https: start the hub with tls=")
            env["MODELSCOPE_DOMAIN"] = hub.domain
        else:
            env["MODELSCOPE_ENDPOINT"] = hub.url
        if ca_bundle:
            env["REQUESTS_CA_BUNDLE"] = str(ca_bundle)
        if hub.token:
            env["MODELSCOPE_API_TOKEN"] = hub.token
        env.update(extra or {})
        return env

    def snapshot(
        self,
        model_id: str,
        cache_root: Path | str,
        hub,
        *,
        local_files_only: bool = False,
        revision: str | None = None,
        ca_bundle: Path | str | None = None,
        extra_env: dict | None = None,
        user: str | None = None,
        timeout: float = 600,
        file: str | None = None,
    ) -> SnapshotResult:
        """Run snapshot_download in this SDK and report the directory it returned and the files in it.

        ``user``: run as that user (through ``runuser``; needs root), to test cache permissions.
        ``file``: run model_file_download of that file instead; ``dir`` is then the model directory it was put in.
        """
        args = {"model_id": model_id, "revision": revision, "local_files_only": local_files_only, "login": bool(hub.token) and self.legacy,
                "file": file}
        with tempfile.TemporaryDirectory(prefix="sdk-home-") as home:
            env = self.env_for(hub, cache_root, home=home, ca_bundle=ca_bundle, extra=extra_env)
            command = [str(self.python), str(JUDGE), json.dumps(args)]
            if user:
                os.chmod(home, 0o777)
                runuser = shutil.which("runuser", path="/usr/sbin:/sbin:/usr/bin:/bin") or "runuser"
                command = [runuser, "-u", user, "--", "env", *[f"{k}={v}" for k, v in env.items()], *command]
            started = time.monotonic()
            proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)
        lines = [line for line in proc.stdout.splitlines() if line.startswith(JUDGE_MARK)]
        crashed = {"ok": False, "error": "no result: " + (proc.stderr.strip().splitlines() or ["?"])[-1]}
        report = json.loads(lines[-1][len(JUDGE_MARK) :]) if lines else crashed
        return SnapshotResult(
            ok=report["ok"],
            dir=report.get("dir"),
            files=report.get("files", {}),
            error=report.get("error"),
            returncode=proc.returncode,
            stdout=proc.stdout,
            stderr=proc.stderr,
            seconds=time.monotonic() - started,
        )


def _install_steps(version: str) -> list[list[str]]:
    pip = ["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input", "-c", str(CONSTRAINTS)]
    slim = SLIM_INSTALLS.get(version)
    if slim is None:
        return [[*pip, f"modelscope=={version}"]]
    return [[*pip, "--no-deps", f"modelscope=={version}"], [*pip, *slim]]


def _fingerprint(version: str) -> str:
    base = subprocess.run([BASE_PYTHON, "-c", "import sys; print(sys.version)"], capture_output=True, text=True, check=True).stdout
    # The constraints by content, not path: checkouts elsewhere that share the cache (a copy for benchmarks, say)
    # must not keep rebuilding each other's venvs, which vanish for a while under every test using them.
    steps = [[CONSTRAINTS.name if arg == str(CONSTRAINTS) else arg for arg in step] for step in _install_steps(version)]
    recipe = json.dumps([version, base, steps, CONSTRAINTS.read_text()])
    return hashlib.sha256(recipe.encode()).hexdigest()


def ensure_sdk(version: str, cache: Path | None = None) -> SdkEnv:
    """The virtualenv for ``modelscope==version``, built on first use (a few minutes), then reused."""
    cache = cache or cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / version
    marker = target / ".modelseed-complete"
    fingerprint = _fingerprint(version)
    with open(cache / f".{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test workers build each venv once
        if marker.is_file() and marker.read_text() == fingerprint:
            return SdkEnv(version, target)
        work = Path(tempfile.mkdtemp(dir=cache, prefix=f".{version}-"))
        try:
            work.chmod(0o755)  # mkdtemp makes it private; runtime users must be able to run the SDK
            subprocess.run([BASE_PYTHON, "-m", "venv", str(work)], check=True, capture_output=True, text=True)
            for step in [*_install_steps(version), ["-c", IMPORT_CHECK]]:
                proc = subprocess.run([str(work / "bin" / "python"), *step], capture_output=True, text=True, check=False)
                if proc.returncode:
                    raise RuntimeError(f"building the modelscope {version} venv failed at {step}:\n{proc.stdout}\n{proc.stderr}")
            (work / marker.name).write_text(fingerprint)
            # Swap by renames, then delete the old tree: the venv is missing for an instant, not for a whole delete.
            old = Path(tempfile.mkdtemp(dir=cache, prefix=f".{version}-old-"))
            if target.exists():
                target.rename(old / "venv")
            work.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return SdkEnv(version, target)


def freeze(env: SdkEnv) -> list[str]:
    """``pip freeze`` of a venv: how sdk-constraints.txt is refreshed."""
    out = subprocess.run([str(env.python), "-m", "pip", "freeze", "--disable-pip-version-check"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line and not line.startswith("modelscope==")]


if __name__ == "__main__":
    # python tests/support/sdk.py [VERSION...]: build (or check) the venvs and print where they are.
    for wanted in sys.argv[1:] or VERSIONS:
        print(ensure_sdk(wanted).root)
