"""Run a command under ``strace -f`` and replay what it did to the file system, in order, to tell which names
were durable (data and directory entry flushed) at each rename.

A path counts as synced once an fsync (or fdatasync) on it completed; creating it, or writing an entry into a
directory (create, link, rename in or out, unlink), makes it unsynced again. A rename carries the synced state of
the tree it moves to its new name (the data lives in the inodes); an exchange swaps the two.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CALLS = ("fsync,fdatasync,syncfs,rename,renameat,renameat2,open,openat,creat,mkdir,mkdirat,link,linkat,"
         "symlink,symlinkat,unlink,unlinkat,rmdir")
_LINE = re.compile(r"^(\d+)\s+(.*)$")
_CALL = re.compile(r"^(\w+)\((.*)\)\s+=\s+(-?\d+)")
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
_FD_PATH = re.compile(r"^\d+<(.*)>$")


@dataclass
class Call:
    name: str
    args: str
    result: int

    def strings(self) -> list[str]:
        return [s.encode().decode("unicode_escape") for s in _STRING.findall(self.args)]

    def fd_path(self) -> str | None:
        match = _FD_PATH.match(self.args.split(",")[0].strip())
        return match.group(1) if match else None


def strace_available() -> bool:
    return shutil.which("strace") is not None


def trace(command: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``command`` under strace (every thread and child), the calls written to ``log``."""
    return subprocess.run(["strace", "-f", "-qq", "-y", "-s", "4096", "-e", f"trace={CALLS}", "-e", "signal=none",
                           "-o", str(log), *command], env=env, capture_output=True, text=True, check=False)


def calls(log: Path) -> list[Call]:
    """Successful calls in order: an fsync where it completed, any other call where it started."""
    out: list[Call | None] = []
    unfinished: dict[str, tuple[int, str]] = {}
    for raw in log.read_text().splitlines():
        match = _LINE.match(raw)
        if not match:
            continue
        pid, text = match.groups()
        if text.endswith("<unfinished ...>"):
            unfinished[pid] = (len(out), text[: -len("<unfinished ...>")].rstrip())
            out.append(None)  # the slot where it started
            continue
        resumed = re.match(r"^<\.\.\. (\w+) resumed>(.*)$", text)
        if resumed:
            slot, head = unfinished.pop(pid, (None, None))
            if head is None:
                continue
            text = head + resumed.group(2)
            parsed = _parse(text)
            if parsed and parsed.name in ("fsync", "fdatasync"):
                out.append(parsed)
            elif parsed:
                out[slot] = parsed
            continue
        out.append(_parse(text))
    return [c for c in out if c is not None]


def _parse(text: str) -> Call | None:
    match = _CALL.match(text)
    if not match or int(match.group(3)) < 0:
        return None
    return Call(match.group(1), match.group(2), int(match.group(3)))


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


class Replay:
    """The synced paths after each call; ``on`` calls ``watch(call, synced)`` before each rename is applied."""

    def __init__(self) -> None:
        self.synced: set[str] = set()

    def _dirty(self, *paths: str) -> None:
        self.synced.difference_update(paths)

    def _move(self, source: str, target: str) -> set[str]:
        moved = {p for p in self.synced if p == source or p.startswith(source + "/")}
        self.synced -= moved
        return {target + p[len(source):] for p in moved}

    def apply(self, call: Call) -> None:
        names = [s for s in call.strings() if s.startswith("/")]
        if call.name in ("fsync", "fdatasync"):
            path = call.fd_path()
            if path and not path.endswith(" (deleted)"):
                self.synced.add(path)
        elif call.name.startswith("rename") and len(names) == 2:
            source, target = names
            if "RENAME_EXCHANGE" in call.args:
                there = self._move(source, target)
                back = self._move(target, source)  # pylint: disable=arguments-out-of-order  # an exchange moves both ways
                self.synced |= there | back
            else:
                self._move(target, target + "\0gone")  # whatever the target held is replaced
                self.synced = {p for p in self.synced if "\0gone" not in p}
                self.synced |= self._move(source, target)
            self._dirty(_parent(source), _parent(target))
        elif call.name in ("open", "openat", "creat") and (call.name == "creat" or "O_CREAT" in call.args) and names:
            self._dirty(names[0], _parent(names[0]))
        elif call.name in ("mkdir", "mkdirat", "unlink", "unlinkat", "rmdir") and names:
            self._dirty(names[0], _parent(names[0]))
        elif call.name in ("link", "linkat", "symlink", "symlinkat") and names:
            self._dirty(_parent(names[-1]))
