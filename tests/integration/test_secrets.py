"""Secrets at -vvvv: a hub token, a bundle password and the key that signs the bundle never show up in output, logs,
files, process arguments or environments, and the token never reaches the object storage a hub redirects large files to.

The hub requires the token and redirects files above 1 MiB to ``localhost``: the same server under another host
name, so another origin for the client. Every request's headers are kept in memory, to tell what each origin got.
"""

from __future__ import annotations

import base64
import json
import socket
import uuid
from pathlib import Path
from urllib.parse import quote

import integration.test_seed_models_fleet as seeding
import pytest
from integration.test_cache_install import BundleServer
from integration.test_seed_models_fleet import fleet, inventory, seed  # noqa: F401  # fleet is a fixture; pylint: disable=unused-import

from support.leak_scan import ProcessWatch, Secrets
from support.mshub import MsHub
from support.mshub.handler import Handler
from support.playbook import run_tasks
from support.reliability import record
from support.sample_models import MODEL
from support.signing import allowed_signers, key_material, ssh_key

pytestmark = [pytest.mark.hostile]

# Distinctive, and with characters that URL-encoding changes; each random core is looked for on its own too.
CORE, WRONG_CORE = uuid.uuid4().hex, uuid.uuid4().hex
TOKEN = f"ms-token/{CORE}+secret="
WRONG_TOKEN = f"ms-token/{WRONG_CORE}+wrong="
PASSWORD = f"bundle pass:{uuid.uuid4().hex}/&"
OBJECT_HOST = "localhost"
NOWHERE = "appears nowhere"


@pytest.fixture(scope="module")
def headers_seen():
    """(Host, path, headers) of every request any test hub answers while this module runs."""
    seen: list[tuple[str, str, dict[str, str]]] = []
    original = Handler._dispatch

    def keep_headers(handler):
        seen.append((handler.headers.get("Host", ""), handler.path, dict(handler.headers.items())))
        return original(handler)

    Handler._dispatch = keep_headers
    yield seen
    Handler._dispatch = original


@pytest.fixture(scope="module")
def private_hub(hub_root, headers_seen):
    with MsHub(hub_root, token=TOKEN, redirect_threshold=1 << 20, object_host=OBJECT_HOST) as server:
        yield server


def redirect_leaks(hub: MsHub, headers_seen, secrets: Secrets, since: int) -> tuple[list[str], int]:
    """What requests to the object host carried: credentials, or the token in any form. And how many there were."""
    leaks, count = [], 0
    object_origin = f"{OBJECT_HOST}:{hub.port}"
    for host, path, headers in headers_seen[since:]:
        if host != object_origin:
            continue
        count += 1
        leaks.extend(f"{path}: {name} header" for name in headers if name.lower() in ("authorization", "cookie"))
        leaks.extend(f"{path}: {label}" for label in secrets.in_texts({"headers": repr(headers)}))
    return leaks, count


def scratch_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """Ansible's log and temporary files inside ``tmp_path``, where the scan reads them; and the log's path."""
    log, scratch = tmp_path / "ansible.log", tmp_path / "ansible-tmp"
    return {"ANSIBLE_LOG_PATH": str(log), "ANSIBLE_LOCAL_TEMP": str(scratch / "local"), "ANSIBLE_REMOTE_TMP": str(scratch / "remote")}, log


def test_the_key_scan_finds_a_copied_or_rewrapped_key(tmp_path):
    """Not blind to the key: its file copied elsewhere, its body re-wrapped on one line, and the raw private
    scalar in base64 are found; its public half is not key material."""
    key = ssh_key(tmp_path / "keys" / "k")
    secrets = Secrets(**key_material(key))
    body = "".join(line for line in key.read_text().splitlines() if not line.startswith("-----"))
    (tmp_path / "copy").write_bytes(key.read_bytes())
    (tmp_path / "one-line").write_text(f"key: {body}\n")
    (tmp_path / "public").write_bytes(Path(f"{key}.pub").read_bytes())
    found = secrets.in_trees(tmp_path, skip=(tmp_path / "keys",))
    assert any(f.startswith(f"{tmp_path / 'copy'}: key file line") for f in found), found
    assert any(f.startswith(f"{tmp_path / 'one-line'}: private scalar base64") for f in found), found
    assert not any(f.startswith(str(tmp_path / "public")) for f in found), found


def test_the_scanner_finds_every_form_and_follows_no_link(tmp_path):
    """Not blind: the password inside a Basic header and the token in a query string are found; a link out is not read."""
    secrets = Secrets(token=TOKEN, token_core=CORE, password=PASSWORD)
    (tmp_path / "header").write_text("Authorization: Basic " + base64.b64encode(f"fleet:{PASSWORD}".encode()).decode())
    (tmp_path / "query").write_text("https://x/?t=" + quote(TOKEN, safe=""))
    (tmp_path / "etc").symlink_to(Path("/etc"))
    found = secrets.in_trees(tmp_path)
    header, query = str(tmp_path / "header"), str(tmp_path / "query")
    assert any(f.startswith(f"{header}: password base64") for f in found), found
    assert f"{query}: token url-encoded" in found, found
    assert all(f.startswith((header, query)) for f in found), found


def test_modules_at_vvvv(private_hub, headers_seen, tmp_path):
    """Download with the token, bundle, install over http with basic auth (as options and inside the URL)."""
    secrets = Secrets(token=TOKEN, token_core=CORE, password=PASSWORD)
    cache, bundle = tmp_path / "cache", tmp_path / "bundle"
    env, log = scratch_env(tmp_path)
    (tmp_path / "play").mkdir()
    mark, hub_mark = len(headers_seen), len(private_hub.log)
    with BundleServer(bundle, auth=("fleet", PASSWORD)) as server:
        in_url = server.url.replace("://", f"://fleet:{quote(PASSWORD, safe='')}@")
        tasks = [
            {"modelseed.fleet.modelscope_model": {"name": MODEL, "cache_dir": str(cache), "endpoint": private_hub.url, "token": TOKEN,
                                                  "layout": "all"}},
            {"modelseed.fleet.cache_bundle": {"cache_dir": str(cache), "dest": str(bundle), "models": [{"name": MODEL}]}},
            {"modelseed.fleet.cache_install": {"src": server.url, "cache_dir": str(tmp_path / "installed"), "layout": "all",
                                               "url_username": "fleet", "url_password": PASSWORD}},
            {"modelseed.fleet.cache_install": {"src": in_url, "cache_dir": str(tmp_path / "installed-2"), "layout": "all"}},
        ]
        with ProcessWatch(secrets) as watch:
            run = run_tasks(tasks, verbosity=4, env=env, workdir=tmp_path / "play")
    found = secrets.in_texts({"stdout": run.stdout, "stderr": run.stderr, "ansible log": log.read_bytes()})
    found += secrets.in_trees(tmp_path, skip=(tmp_path / "play" / "playbook.yml",))  # the playbook is the input
    found += sorted(watch.found)
    redirected, objects = redirect_leaks(private_hub, headers_seen, secrets, mark)
    found += redirected
    works = not any(r.get("failed") for r in run.results)
    record("secrets: token and password at -vvvv (modules)", outcome=NOWHERE, handled=int(works and not found), leaked=len(found))
    assert works, [r.get("msg") for r in run.results]
    assert not found, found
    # It was all real: the hub wanted the token and got it, large files came from the other origin, without it.
    assert objects >= 2 and all(entry.auth for entry in private_hub.log.entries(hub_mark) if not entry.path.startswith("/oss/"))
    assert not any(entry.auth for entry in private_hub.log.entries(hub_mark) if entry.path.startswith("/oss/"))
    assert {"weights/model-00001.bin", "weights/model-00002.bin"} <= set(private_hub.log.downloads(hub_mark))
    assert len(watch.seen) > 3, watch.seen  # ansible-playbook and its module processes were sampled
    assert log.stat().st_size > 10000 and "<localhost> EXEC" in log.read_text()  # -vvvv really logged


def test_a_wrong_token_fails_without_showing_either(private_hub, tmp_path):
    """The same full scan for a rejected token: output, the -vvvv log, every file the run left, its processes."""
    secrets = Secrets(token=TOKEN, token_core=CORE, wrong=WRONG_TOKEN, wrong_core=WRONG_CORE)
    env, log = scratch_env(tmp_path)
    (tmp_path / "play").mkdir()
    download = {"name": MODEL, "cache_dir": str(tmp_path / "cache"), "endpoint": private_hub.url, "token": WRONG_TOKEN, "retries": 0}
    with ProcessWatch(secrets) as watch:
        run = run_tasks([{"modelseed.fleet.modelscope_model": download}], verbosity=4, env=env, workdir=tmp_path / "play")
    found = secrets.in_texts({"stdout": run.stdout, "stderr": run.stderr, "result": repr(run[0]), "ansible log": log.read_bytes()})
    found += secrets.in_trees(tmp_path, skip=(tmp_path / "play" / "playbook.yml",))  # the playbook is the input
    found += sorted(watch.found)
    failed_clearly = bool(run[0].get("failed")) and "HTTP 401" in run[0]["msg"]
    record("secrets: wrong token at -vvvv", outcome=NOWHERE, handled=int(failed_clearly and not found), leaked=len(found))
    assert failed_clearly, run[0]["msg"]
    assert not found, found
    assert len(watch.seen) > 3, watch.seen  # ansible-playbook and the module's processes were sampled
    assert "<localhost> EXEC" in log.read_text()  # -vvvv really logged


def test_a_proxy_password_at_vvvv_when_the_proxy_is_unreachable(tmp_path):
    """cache_install with credentials in its proxy option, failing on the way to that proxy: the message names the
    proxy, never its password, nor does anything the run leaves or runs."""
    secrets = Secrets(password=PASSWORD)
    env, log = scratch_env(tmp_path)
    (tmp_path / "play").mkdir()
    with socket.socket() as placeholder:  # a port nothing listens on
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    install = {"src": "http://127.0.0.1:9/bundle/", "cache_dir": str(tmp_path / "installed"), "layout": "all", "retries": 0,
               "proxy": f"http://fleet:{quote(PASSWORD, safe='')}@127.0.0.1:{port}"}
    with ProcessWatch(secrets) as watch:
        run = run_tasks([{"modelseed.fleet.cache_install": install}], verbosity=4, env=env, workdir=tmp_path / "play")
    found = secrets.in_texts({"stdout": run.stdout, "stderr": run.stderr, "result": repr(run[0]), "ansible log": log.read_bytes()})
    found += secrets.in_trees(tmp_path, skip=(tmp_path / "play" / "playbook.yml",))  # the playbook is the input
    found += sorted(watch.found)
    failed_clearly = bool(run[0].get("failed")) and f"cannot reach 127.0.0.1:9 through the proxy http://127.0.0.1:{port}:" in run[0]["msg"]
    record("secrets: proxy password at -vvvv", outcome=NOWHERE, handled=int(failed_clearly and not found), leaked=len(found))
    assert failed_clearly, run[0]["msg"]
    assert not found, found
    assert len(watch.seen) > 3, watch.seen  # ansible-playbook and the module's processes were sampled


def fleet_test(function):
    """The marks of the fleet tests: integration, slow, and skipped where the fleet cannot run."""
    for mark in seeding.pytestmark:
        function = mark(function)
    return function


@fleet_test
def test_seed_models_on_a_fleet_at_vvvv(fleet, private_hub, headers_seen, tmp_path, monkeypatch):  # noqa: F811 (fleet is the fixture)
    """The whole playbook: the staging host downloads with the token and serves the bundle behind basic auth; the
    controller signs the bundle with its key, and the nodes verify it. The key stays in its file on the controller."""
    key = ssh_key(tmp_path / "keys" / "release")
    for node in (fleet.node(2), fleet.node(3)):
        (node.path / "etc/modelseed").mkdir(exist_ok=True)
        allowed_signers(node.path / "etc/modelseed/allowed_signers-secret", {"release@example.com": key})
    secrets = Secrets(token=TOKEN, token_core=CORE, password=PASSWORD, **key_material(key))
    log, report, scratch = tmp_path / "ansible.log", tmp_path / "report.json", tmp_path / "ansible-tmp"
    for name, value in (("ANSIBLE_LOG_PATH", log), ("ANSIBLE_LOCAL_TEMP", scratch)):
        monkeypatch.setenv(name, str(value))
    inv = inventory(fleet, tmp_path / "inventory", {
        "modelseed_models": [{"name": MODEL}],
        "modelseed_cache_dir": "/var/cache/modelscope-secret",
        "modelseed_bundle_dir": "/srv/modelseed/bundle-secret",
        "modelseed_transport": "pull",
        "modelseed_endpoint": private_hub.url,
        "modelseed_token": TOKEN,
        "modelseed_bundle_password": PASSWORD,
        "modelseed_report_path": str(report),
        "node_check_ready": False,
        "modelseed_sign_key": str(key),
        "modelseed_trust_allowed_signers": "/etc/modelseed/allowed_signers-secret",
        "modelseed_trust_identities": ["release@example.com"],
    }, staging={"staging_poll_interval": 1, "staging_http_port": 8089})
    mark, hub_mark = len(headers_seen), len(private_hub.log)
    with ProcessWatch(secrets) as watch:
        run = seed(fleet, inv, "-vvvv")
    found = secrets.in_texts({"stdout": run.stdout, "stderr": run.stderr, "ansible log": log.read_bytes()})
    found += secrets.in_trees(*(node.path for node in fleet.nodes), scratch, report)
    found += sorted(watch.found)
    redirected, objects = redirect_leaks(private_hub, headers_seen, secrets, mark)
    found += redirected
    installed = all((node.path / "var/cache/modelscope-secret/models/Qwen/Qwen2___5-0___5B-Test/config.json").is_file() for node in
                    (fleet.node(2), fleet.node(3)))
    record("secrets: token and password at -vvvv (seed_models.yml on a fleet)", outcome=NOWHERE, handled=int(installed and not found),
           leaked=len(found))
    assert installed, run.stdout[-5000:]
    assert not found, found
    assert objects >= 2 and {"weights/model-00001.bin", "weights/model-00002.bin"} <= set(private_hub.log.downloads(hub_mark))
    entries = private_hub.log.entries(hub_mark)
    assert all(e.auth for e in entries if not e.path.startswith("/oss/")) and not any(e.auth for e in entries if e.path.startswith("/oss/"))
    # The nodes pulled from the staging host's nginx with the password; the watch sampled the ssh sessions and
    # the modules they ran on the nodes (/usr/bin/python3, the nodes' interpreter) as well as the controller.
    rows = json.loads(report.read_text())["nodes"]
    assert [row["transport"] for row in rows] == ["pull", "pull"]
    # The key was used: the bundle was signed with it and verified on both nodes.
    assert all(row["signature"].startswith("verified by release@example.com (ssh-ed25519 key SHA256:") for row in rows), rows
    programs = {program for _pid, program in watch.seen}
    assert b"ssh" in programs and b"/usr/bin/python3" in programs, sorted(programs)
    assert "ESTABLISH SSH CONNECTION" in log.read_text()
