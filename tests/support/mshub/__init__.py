"""A ModelScope-compatible hub for tests: serves model repositories from a directory tree."""

from .faults import Fault, Faults
from .log import Request, RequestLog
from .repos import make_repo, push_commit, tag
from .server import MsHub
from .store import Store

__all__ = ["Fault", "Faults", "MsHub", "Request", "RequestLog", "Store", "make_repo", "push_commit", "tag"]
