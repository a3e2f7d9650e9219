"""pull through a caching proxy: squid in front of the staging nginx is the nodes' only way to the bundle.

An air-gapped fleet: node1 is the staging host, whose nginx (the staging role's, with basic authentication)
listens on node1's own loopback, 127.0.0.1:8080, and a squid of the test's (own config, cache, logs, stopped by
PID) listens on node1's fleet address in node1's network namespace, with proxy authentication. node2 and node3
have network namespaces of their own: 127.0.0.1 is their own loopback, where nothing listens, so the bundle URL
reaches the origin only through squid. seed_models.yml serves and pulls with modelseed_pull_proxy, one node after
the other: squid's access.log shows a miss for node2's tar and a hit for node3's, nginx's log shows the tar sent
once and only squid as its client. Then node3 runs cache_install with the proxy of its environment (http_proxy,
no_proxy) and with the option over the environment, and a resume (Range) goes through squid.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from ansible_collections.modelseed.fleet.plugins.module_utils._hub.http_client import HttpClient, ResumableGet
from support.bundles import ModelSpec, write_bundle
from support.cache_audit import audit_cache, bundle_version
from support.fleet import Fleet, netns, new_state_dir, sandbox
from support.interrupt import wait_until
from support.leak_scan import Secrets
from support.playbook import ANSIBLE_PLAYBOOK, ansible_env
from support.sample_models import MODEL, model_files
from support.squid import Squid
from support.squid import available as squid_installed

SPEC = ModelSpec(MODEL, model_files())
TAR = "Qwen--Qwen2.5-0.5B-Test--master.tar"
ORIGIN = "http://127.0.0.1:8080/bundle/"
PROXY_USER, PROXY_PASSWORD = "fleet", "pr0xy p@ss:w/rd of the fleet"
BUNDLE_USER, BUNDLE_PASSWORD = "modelseed", "bundle s3cret of staging"
# nginx's combined log format: client, user, request, status, body bytes.
NGINX_LINE = re.compile(r'^(\S+) - (\S+) \[[^]]+\] "(\S+) (\S+) [^"]*" (\d+) (\d+)')

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("bwrap") or not os.path.exists(sandbox.SSHD)
                       or not (shutil.which("nginx") or os.path.exists("/usr/sbin/nginx")) or not squid_installed(),
                       reason="needs root, bubblewrap, openssh-server, nginx and squid (with its basic_ncsa_auth)"),
]


@pytest.fixture(scope="module")
def fleet():
    with Fleet(new_state_dir("proxy-"), 3, airgap=True, proxy=True,
               groups={"modelscope_staging": [1], "modelscope_nodes": [2, 3]}) as running:
        yield running


@pytest.fixture(scope="module")
def squid(fleet):
    # Not under pytest's tmp_path: squid runs as the user proxy, which must reach its directory.
    directory = Path(tempfile.mkdtemp(prefix="modelseed-squid-"))
    try:
        with Squid(directory, fleet.node(1).address, 3128, clients=f"{fleet.subnet}.0/24",
                   prefix=netns.command_prefix(fleet.gap.node(1)), users={PROXY_USER: PROXY_PASSWORD}) as running:
            yield running
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def run_playbook(inventory_dir: Path, playbook: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([ANSIBLE_PLAYBOOK, "-i", str(inventory_dir), str(playbook), *args],
                          env=ansible_env(ANSIBLE_STDOUT_CALLBACK="default"), capture_output=True, text=True, timeout=300, check=False)


def inventory(fleet_: Fleet, directory: Path, squid_: Squid) -> Path:
    (directory / "group_vars").mkdir(parents=True)
    shutil.copy(fleet_.inventory_path, directory / "hosts.yml")
    (directory / "group_vars" / "all.yml").write_text(yaml.safe_dump({
        "modelseed_models": [{"name": MODEL}],
        "modelseed_transport": "pull",
        "modelseed_cache_dir": "/var/cache/modelscope",
        "modelseed_bundle_password": BUNDLE_PASSWORD,
        "modelseed_pull_proxy": squid_.url(PROXY_USER, PROXY_PASSWORD),
        "modelseed_report_path": str(directory / "report.json"),
        "node_pull_retries": 0,
    }))
    (directory / "group_vars" / "modelscope_staging.yml").write_text(yaml.safe_dump({
        "staging_http_address": "127.0.0.1",  # node1's own loopback: squid, beside it, is the only way in
        "staging_http_url_host": "127.0.0.1",
        "staging_install_packages": False,
    }))
    return directory


def nginx_log(fleet_: Fleet) -> list[tuple[str, str, str, str, int, int]]:
    lines = (fleet_.node(1).path / "srv/modelseed/http/logs/access.log").read_text().splitlines()
    return [(m[1], m[2], m[3], m[4], int(m[5]), int(m[6])) for m in map(NGINX_LINE.match, lines) if m]


def assert_installed(fleet_: Fleet, node: int, cache: str) -> None:
    root = fleet_.node(node).path / cache.lstrip("/")
    assert (root / "models/Qwen/Qwen2___5-0___5B-Test/weights/model-00001.bin").is_file()
    assert audit_cache(root, MODEL, bundle_version(SPEC)) == []


def environment_cases(squid_: Squid) -> list[tuple[str, str | None, dict[str, str]]]:
    """(cache_dir, proxy option (None: not set), environment) of the cache_install runs on node3 after the seeding."""
    proxy = squid_.url(PROXY_USER, PROXY_PASSWORD)
    return [
        ("/var/cache/modelscope-env", None, {"http_proxy": proxy, "no_proxy": ""}),
        ("/var/cache/modelscope-no-proxy", None, {"http_proxy": proxy, "no_proxy": "127.0.0.1"}),
        ("/var/cache/modelscope-direct", "", {"http_proxy": proxy}),
        ("/var/cache/modelscope-option", proxy, {"http_proxy": "http://127.0.0.1:9", "no_proxy": "127.0.0.1"}),
        ("/var/cache/modelscope-wrong-password", squid_.url(PROXY_USER, "not it"), {}),
    ]


def playbook(path: Path, cases, results: Path) -> Path:
    """seed_models.yml, then node3 runs cache_install once per case, each result saved to ``results``."""
    install = {"src": ORIGIN, "url_username": BUNDLE_USER, "url_password": BUNDLE_PASSWORD, "layout": "all", "retries": 0, "timeout": 10}
    tasks = [{"name": cache, "modelseed.fleet.cache_install": {**install, "cache_dir": cache, **({} if option is None else {"proxy": option})},
              "environment": environment, "register": f"case_{i}", "ignore_errors": True}
             for i, (cache, option, environment) in enumerate(cases)]
    tasks.append({"name": "Save the results", "delegate_to": "localhost", "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
                  "ansible.builtin.copy": {"content": "{{ [%s] | to_json }}" % ", ".join(f"case_{i}" for i in range(len(cases))),
                                           "dest": str(results), "mode": "0600"}})
    path.write_text(yaml.safe_dump([{"ansible.builtin.import_playbook": "modelseed.fleet.seed_models"},
                                    {"name": "Install from the environment's proxy, or none", "hosts": "node3", "gather_facts": False,
                                     "tags": ["always"], "tasks": tasks}], sort_keys=False))
    return path


def test_nodes_pull_through_squid_miss_then_hit(fleet, squid, tmp_path):
    write_bundle(fleet.node(1).path / "srv/modelseed/bundle", [SPEC])
    tar = (fleet.node(1).path / "srv/modelseed/bundle" / TAR).read_bytes()
    inv = inventory(fleet, tmp_path / "inventory", squid)
    cases, results = environment_cases(squid), tmp_path / "results.json"

    # One node at a time (serial is a play keyword: an extra var, not an inventory one), so node3 finds squid's copy.
    proc = run_playbook(inv, playbook(tmp_path / "playbook.yml", cases, results), "--tags", "serve,install", "-e", "modelseed_serial=1")
    assert proc.returncode == 0 and results.exists(), f"{proc.stdout[-20000:]}\n{proc.stderr[-5000:]}"
    for node in (2, 3):
        assert_installed(fleet, node, "/var/cache/modelscope")
    secrets = Secrets(proxy=PROXY_PASSWORD, bundle=BUNDLE_PASSWORD)
    assert secrets.in_texts({"stdout": proc.stdout, "stderr": proc.stderr, "results": results.read_text()}) == []

    # squid: node2's tar was a miss, node3's came out of its cache (after a 304 from nginx: no-cache says ask first).
    seeding = [e for e in squid.log() if e.client in (fleet.node(2).address, fleet.node(3).address)]
    tar_requests = [(e.client, e.result, e.status, e.user) for e in seeding if e.url == ORIGIN + TAR]
    assert tar_requests[:2] == [(fleet.node(2).address, "TCP_MISS", 200, PROXY_USER),
                                (fleet.node(3).address, "TCP_REFRESH_UNMODIFIED", 200, PROXY_USER)], (squid.log(), nginx_log(fleet))
    # nginx: only squid asked (from node1's loopback), with the bundle's credentials the nodes sent through it; the tar
    # went out once, every later request for it was a revalidation without a body.
    origin = nginx_log(fleet)
    assert {(line[0], line[1]) for line in origin} == {("127.0.0.1", BUNDLE_USER)}
    tar_sent = [(status, sent) for _c, _u, _m, path, status, sent in origin if path == "/bundle/" + TAR]
    assert tar_sent[0] == (200, len(tar)) and set(tar_sent[1:]) == {(304, 0)}, origin

    check_the_environment_route(fleet, squid, json.loads(results.read_text()))
    # A resume through squid: a Range request for what a node already holds, answered from squid's cache.
    check_a_resume_through_squid(fleet, squid, tar)


def check_the_environment_route(fleet_: Fleet, squid_: Squid, results: list[dict]) -> None:
    env_route, no_proxy, direct, option, wrong_password = results
    assert env_route.get("failed") is not True, env_route["msg"]
    assert_installed(fleet_, 3, "/var/cache/modelscope-env")
    for refused in (no_proxy, direct):  # 127.0.0.1:8080 asked directly: node3's own loopback, where nothing listens
        assert refused["failed"] and "cannot reach 127.0.0.1:8080: [Errno 111] Connection refused" in refused["msg"], refused["msg"]
    assert option.get("failed") is not True, option["msg"]
    assert_installed(fleet_, 3, "/var/cache/modelscope-option")
    assert wrong_password["failed"] and f"HTTP 407 from the proxy {squid_.url()}: it wants other credentials" in wrong_password["msg"]
    # Through squid, from the cache: the environment's route and the option's; the wrong password was denied.
    node3 = [e for e in squid_.log() if e.client == fleet_.node(3).address]
    assert [e.result for e in node3 if e.url == ORIGIN + TAR] == ["TCP_REFRESH_UNMODIFIED"] * 3
    assert [e.result for e in node3 if e.status == 407] == ["TCP_DENIED"]


def check_a_resume_through_squid(fleet_: Fleet, squid_: Squid, tar: bytes) -> None:
    start = len(tar) // 3
    token = base64.b64encode(f"{BUNDLE_USER}:{BUNDLE_PASSWORD}".encode()).decode()

    def resume():
        # From the controller's namespace, which reaches squid on node1's fleet address like the nodes do.
        client = HttpClient(retries=0, auth_url=ORIGIN, auth_headers={"Authorization": f"Basic {token}"},
                            proxy=squid_.url(PROXY_USER, PROXY_PASSWORD))
        with client.open(ORIGIN + TAR, headers={"Range": "bytes=0-99"}) as first:
            headers = dict(first.headers)
            first.read()
        body, out = ResumableGet(client, ORIGIN + TAR, start=start), bytearray()
        view = memoryview(bytearray(1 << 16))
        while n := body.readinto(view):
            out += view[:n]
        client.close()
        return headers, bytes(out)

    before = len(squid_.log())
    headers, rest = fleet_.call_in_controller(resume)
    assert rest == tar[start:]
    # What a caching proxy goes by, as nginx sends it, through squid.
    assert headers["Cache-Control"] == "public, no-cache" and headers["ETag"] and headers["Last-Modified"]
    assert headers["Content-Range"] == f"bytes 0-99/{len(tar)}"
    wait_until(lambda: len(squid_.log()) >= before + 2, timeout=10)  # squid logs a request once it has ended
    ranges = [(e.url, e.result, e.status) for e in squid_.log()[before:]]
    assert ranges == [(ORIGIN + TAR, "TCP_REFRESH_UNMODIFIED", 206)] * 2
