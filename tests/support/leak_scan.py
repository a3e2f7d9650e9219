"""Find a secret wherever a run could have left it: output, logs, files, process arguments and environments.

A secret is looked for as it is and in the forms it takes on the way: URL-encoded, and base64 at each of the
three alignments it can have inside a longer base64 string (an ``Authorization: Basic`` header, a JSON blob).
"""

from __future__ import annotations

import base64
import os
import threading
from pathlib import Path
from urllib.parse import quote, quote_plus

from support.processes import descendants


def forms(secret: str) -> dict[str, bytes]:
    raw = secret.encode()
    found = {"as is": raw, "url-encoded": quote(secret, safe="").encode(), "form-encoded": quote_plus(secret).encode()}
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw)
        # The 4-character groups that hold only the secret's bytes: the same wherever the secret sits.
        found[f"base64 at offset {offset}"] = encoded[4 if offset else 0:-4]
    return found


class Secrets:
    """Several secrets and their forms; ``in_bytes`` names those found in ``data``."""

    def __init__(self, **secrets: str):
        self.forms = {f"{name} {form}": data for name, secret in secrets.items() for form, data in forms(secret).items()}

    def in_bytes(self, data: bytes) -> list[str]:
        return [label for label, needle in self.forms.items() if needle in data]

    def in_texts(self, texts: dict[str, str | bytes]) -> list[str]:
        return [f"{where}: {label}" for where, text in texts.items()
                for label in self.in_bytes(text.encode() if isinstance(text, str) else text)]

    def in_trees(self, *roots: Path, skip: tuple[Path, ...] = ()) -> list[str]:
        """Every regular file below ``roots`` (links not followed), read whole."""
        found = []
        for root in roots:
            for directory, dirs, files in os.walk(root):
                dirs[:] = [d for d in dirs if Path(directory, d) not in skip]
                for name in files:
                    path = Path(directory, name)
                    if path in skip or path.is_symlink() or not path.is_file():
                        continue
                    try:
                        data = path.read_bytes()
                    except OSError:
                        continue
                    found.extend(f"{path}: {label}" for label in self.in_bytes(data))
        return found


class ProcessWatch:
    """Reads the argument list and environment of every descendant of this process every ``interval`` seconds,
    for as long as it runs (a context manager); ``found`` names each process that showed a secret."""

    def __init__(self, secrets: Secrets, interval: float = 0.02):
        self.secrets = secrets
        self.interval = interval
        self.found: set[str] = set()
        self.seen: set[tuple[int, bytes]] = set()  # (pid, argv[0]) of every process sampled
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="process-watch", daemon=True)

    def __enter__(self) -> ProcessWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            for pid in descendants(me):
                self._sample(pid)
            self._stop.wait(self.interval)

    def _sample(self, pid: int) -> None:
        program = b"?"
        for part in ("cmdline", "environ"):
            try:
                data = Path(f"/proc/{pid}/{part}").read_bytes()
            except OSError:  # gone already, or a kernel thread
                continue
            if part == "cmdline":
                program = data.split(b"\0", 1)[0]
                self.seen.add((pid, program))
            for label in self.secrets.in_bytes(data):
                self.found.add(f"pid {pid} {part} ({program.decode(errors='replace')}): {label}")
