"""Find a secret wherever a run could have left it: output, logs, files, process arguments and environments.

A secret is looked for as it is and in the forms it takes on the way: URL-encoded (``/`` kept or escaped,
spaces as ``+`` or ``%20``, upper- or lower-case ``%xx``), with ``+`` turned into a space by a form decoder,
JSON-escaped (``/`` as ``\\/`` too, and escaped twice for JSON inside a JSON string), hex, and base64 (standard
and URL-safe) at each of the three alignments it can have inside a longer base64 string (an
``Authorization: Basic`` header, a JSON blob). ``Secrets(core=...)`` adds the random part of a token on its own,
in the same forms: a token cut short or re-wrapped still gives that away.
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
from pathlib import Path
from urllib.parse import quote, quote_plus

from support.processes import descendants

# A shorter secret gives base64 needles short enough to match by chance.
MIN_SECRET = 16


def _lower_escapes(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), text)


def _json_escaped(text: str) -> str:
    return json.dumps(text)[1:-1]


def forms(secret: str | bytes) -> dict[str, bytes]:
    """Each form of ``secret`` by name; forms that come out the same are kept once, under the first name.
    A secret given as bytes (a private key's scalar, say) has no text forms: as is, hex and base64."""
    if len(secret) < MIN_SECRET:
        raise ValueError(f"a secret to look for needs {MIN_SECRET} characters at least, not {len(secret)}")
    if isinstance(secret, bytes):
        return _unique(_binary_forms(secret, {"as is": secret}))
    raw = secret.encode()
    texts = {
        "as is": secret,
        "url-encoded": quote(secret, safe=""),
        "url-encoded, / kept": quote(secret),
        "form-encoded": quote_plus(secret, safe=""),
        "form-encoded, / kept": quote_plus(secret),
        "with + read as a space": secret.replace("+", " "),
        "json-escaped": _json_escaped(secret),
        "json-escaped, / as \\/": _json_escaped(secret).replace("/", "\\/"),
        "json-escaped twice": _json_escaped(_json_escaped(secret)),
    }
    for name in ("url-encoded", "url-encoded, / kept", "form-encoded", "form-encoded, / kept"):
        texts[f"{name}, lower-case %xx"] = _lower_escapes(texts[name])
    return _unique(_binary_forms(raw, {name: text.encode() for name, text in texts.items()}))


def _binary_forms(raw: bytes, found: dict[str, bytes]) -> dict[str, bytes]:
    found["hex"] = raw.hex().encode()
    found["hex, upper-case"] = raw.hex().upper().encode()
    for alphabet, encode in (("base64", base64.b64encode), ("url-safe base64", base64.urlsafe_b64encode)):
        for offset in range(3):
            encoded = encode(b"\0" * offset + raw)
            # The 4-character groups that hold only the secret's bytes: the same wherever the secret sits.
            found[f"{alphabet} at offset {offset}"] = encoded[4 if offset else 0:-4]
    return found


def _unique(found: dict[str, bytes]) -> dict[str, bytes]:
    unique: dict[str, bytes] = {}
    for name, needle in found.items():
        if needle not in unique.values():
            unique[name] = needle
    return unique


class Secrets:
    """Several secrets and their forms; ``in_bytes`` names those found in ``data``. Name a token's random part
    as a secret of its own (``core=``) to find it wherever the rest of the token was cut off or changed."""

    def __init__(self, **secrets: str | bytes):
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
