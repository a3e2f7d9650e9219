"""seed_models.yml end to end on the real-sshd fleet: node1 stages, node2 and node3 are seeded.

Ansible logs in as a non-root operator (``deploy``) and becomes root with each node's real sudo, as the
documented inventories do; node1 pushes as that operator, with the key in its ~/.ssh.

Push (rsync over ssh from node1) of a bundle the controller signs and the nodes verify, then check mode (no
change, nothing written); every way a bundle can fail a node's trust list, in one play, refused with nothing
changed; pull over HTTPS with basic authentication from the nginx node1 runs, with a dead mirror first in line for
one node. A second real run of push or pull changing nothing is the molecule scenarios' idempotence step
(docs/testing.md). The caches are judged from outside the nodes (their trees on this side) and with the real SDK,
inside the nodes (modelscope_ready) and outside.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pwd
import re
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from support.bundles import ModelSpec, write_bundle
from support.fleet import Fleet, login, new_state_dir, sandbox
from support.module_process import run_modules
from support.playbook import ANSIBLE_PLAYBOOK, REPO, RESULTS_STAT, ansible_env, results_env
from support.sample_models import MODEL, model_files
from support.sdk import cache_dir as sdk_cache_dir
from support.signing import allowed_signers, ssh_key, ssh_sign
from support.tls import ensure_tls

ESCAPED = "Qwen/Qwen2___5-0___5B-Test"
SDK_VERSIONS = ("1.37.1", "1.40.2")
RECAP = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
PROGRESS = re.compile(r"Qwen/Qwen2\.5-0\.5B-Test: \d+/\d+ files, [\d.]+ \w+ of [\d.]+ \w+ \([\d.]+%\), [\d.]+ \w+/s")
PASSWORD = "s3cret bundle pass"
RELEASE = "release@example.com"  # the identity of the key that signs bundles

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("bwrap") or not os.path.exists(sandbox.SSHD)
                       or not shutil.which("rsync") or not (shutil.which("nginx") or os.path.exists("/usr/sbin/nginx"))
                       or not os.path.exists(sandbox.SUDO),
                       reason="the fleet needs root, bubblewrap, openssh-server, rsync, nginx and sudo"),
]


@pytest.fixture(scope="module")
def fleet():
    groups = {"modelscope_staging": [1], "modelscope_nodes": [2, 3]}
    # The nodes run the SDK virtualenvs to prove readiness: let them see those, wherever the checkout is.
    sdk_cache_dir().mkdir(parents=True, exist_ok=True)
    with Fleet(new_state_dir("seed-"), 3, groups=groups, shared=[sdk_cache_dir()], user=login.OPERATOR) as running:
        # The staging host pushes to the nodes with a key of its own, in its login user's ~/.ssh, as a real one would hold.
        running.share_key(1)
        yield running


@pytest.fixture(scope="module")
def sdk_pythons(sdk):
    # The venvs live under this checkout, which nodes see read-only like the rest of the host's /.
    return [str(sdk(version).python) for version in SDK_VERSIONS]


def inventory(fleet_: Fleet, directory: Path, shared: dict, staging: dict | None = None) -> Path:
    """The fleet's hosts plus group_vars/all.yml: the one place a user sets what both halves need."""
    (directory / "group_vars").mkdir(parents=True, exist_ok=True)
    shutil.copy(fleet_.inventory_path, directory / "hosts.yml")
    (directory / "group_vars" / "all.yml").write_text(yaml.safe_dump(shared, sort_keys=False))
    if staging:
        (directory / "group_vars" / "modelscope_staging.yml").write_text(yaml.safe_dump(staging, sort_keys=False))
    return directory


def seed(fleet_: Fleet, inventory_dir: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([*fleet_.command_prefix, ANSIBLE_PLAYBOOK, "-i", str(inventory_dir), str(REPO / "seed_models.yml"), *args],
                          env=ansible_env(ANSIBLE_STDOUT_CALLBACK="default"), capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"seed_models.yml {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-20000:]}\n{proc.stderr[-5000:]}"
    return proc


def recap(proc: subprocess.CompletedProcess) -> dict[str, dict[str, int]]:
    return {host: {"changed": int(changed), "unreachable": int(unreachable), "failed": int(failed)}
            for host, _ok, changed, unreachable, failed in RECAP.findall(proc.stdout)}


def changed_hosts(proc: subprocess.CompletedProcess) -> dict[str, int]:
    return {host: counts["changed"] for host, counts in recap(proc).items() if counts["changed"]}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_seeded(fleet_: Fleet, node: int, cache: str) -> None:
    """Every file of the model, byte for byte, in the layout every SDK reads, and MODELSCOPE_CACHE pointing at it."""
    root = fleet_.node(node).path
    model_dir = root / cache.lstrip("/") / "models" / ESCAPED
    expected = {path: sha256(data) for path, data in model_files().items()}
    found = {str(p.relative_to(model_dir)): sha256(p.read_bytes()) for p in model_dir.rglob("*") if p.is_file()
             and p.name not in (".msc", ".mdl", ".mv")}
    assert found == expected
    assert {".msc", ".mdl", ".mv"} <= {p.name for p in model_dir.iterdir()}
    hub_link = root / cache.lstrip("/") / "hub" / ESCAPED
    assert hub_link.is_symlink() and not os.path.isabs(os.readlink(hub_link))
    assert f"MODELSCOPE_CACHE={cache}" in (root / "etc/environment").read_text().splitlines()
    assert f"export MODELSCOPE_CACHE='{cache}'" in (root / "etc/profile.d/modelscope.sh").read_text()
    assert f"MODELSCOPE_CACHE={cache}" in (root / "etc/systemd/system.conf.d/modelscope.conf").read_text()
    # What a user gets who logs in: pam_env reads /etc/environment, a login shell the profile script.
    assert login_env(fleet_, node, "MODELSCOPE_CACHE") == (cache, cache)


def login_env(fleet_: Fleet, node: int, name: str) -> tuple[str, str]:
    """``name`` in a plain ssh session and in a login shell on the node."""
    ssh = [*fleet_.command_prefix, "ssh", "-i", str(fleet_.key), "-o", f"UserKnownHostsFile={fleet_.known_hosts}",
           "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", f"{fleet_.user}@{fleet_.node(node).address}"]
    plain = subprocess.run([*ssh, f"printenv {name}"], capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    login = subprocess.run([*ssh, f"bash -lc 'printenv {name}'"], capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    return plain, login


def node_state(fleet_: Fleet) -> dict[str, tuple]:
    """(type, size, mtime, link target) of every path the play manages on every node, SDK scratch files aside."""
    state = {}
    skip = {".mdl", ".lock", "._____temp"}  # SDKs up to 1.37 rewrite these on every load, even offline
    for node in fleet_.nodes:
        for top in ("etc/environment", "etc/profile.d", "etc/systemd", "var/cache", "srv"):
            base = node.path / top
            paths = [base] if base.is_file() else sorted(base.rglob("*")) if base.exists() else []
            for path in paths:
                if skip & set(path.relative_to(node.path).parts):
                    continue
                st = path.lstat()
                state[str(path)] = (st.st_mode, st.st_size if not path.is_dir() else 0, st.st_mtime_ns if not path.is_dir() else 0,
                                    os.readlink(path) if path.is_symlink() else None)
    return state


def test_push_then_nothing_to_do_then_check_mode(fleet, hub, tls_hub, tls, sdk, sdk_pythons, tmp_path):
    report = tmp_path / "report.json"
    # The controller signs the bundle with its release key; the nodes install only what that key signed.
    release = ssh_key(tmp_path / "keys" / "release")
    for node in (2, 3):
        (fleet.node(node).path / "etc/modelseed").mkdir(exist_ok=True)
        allowed_signers(fleet.node(node).path / "etc/modelseed/allowed_signers", {RELEASE: release})
    inv = inventory(fleet, tmp_path / "inventory", {
        "modelseed_models": [{"name": MODEL}],
        "modelseed_cache_dir": "/var/cache/modelscope",
        "modelseed_transport": "push",
        "modelseed_endpoint": hub.url,
        "modelseed_sdk_pythons": sdk_pythons,
        "modelseed_report_path": str(report),
        "modelseed_sign_key": str(release),
        "modelseed_trust_allowed_signers": "/etc/modelseed/allowed_signers",
        "modelseed_trust_identities": [RELEASE],
    }, staging={"staging_poll_interval": 3})  # a report every 3 s of the slow download: each round is several tasks
    # Slow weights, so that the download runs long enough to be reported while it runs, also when the play's own
    # tasks are slowed down by other work on the machine (about 12 s for the larger file).
    hub.faults.add(action="throttle", path="/oss/", file="weights/*", rate=256 << 10, times=2)

    assert {host["ansible_user"] for host in fleet.inventory["all"]["hosts"].values()} == {login.OPERATOR}
    start = len(hub.log)
    first = seed(fleet, inv)
    assert PROGRESS.search(first.stdout), first.stdout
    # The hub is read once for the whole fleet: every file exactly once, by the staging host.
    assert hub.log.bytes_served(start) == sum(len(d) for d in model_files().values())
    assert set(changed_hosts(first)) == {"node1", "node2", "node3"}
    for node in (2, 3):
        assert_seeded(fleet, node, "/var/cache/modelscope")
        # Pushed tars are gone after the install: one copy of the models per node. The signature came with the manifest.
        assert sorted(p.name for p in (fleet.node(node).path / "var/cache/modelseed-bundle").iterdir()) == [
            "SHA256SUMS", "manifest.json", "manifest.json.sig"]
        # rsync logged in as the operator and wrote as root, through sudo, into the root-owned bundle directory.
        assert (fleet.node(node).path / "var/cache/modelseed-bundle/manifest.json").stat().st_uid == 0
    # push sends the bundle in tree form: a directory per model holding its files (copies here: /srv and /var/cache
    # are two mounts on a node, so no hard links).
    bundle = fleet.node(1).path / "srv/modelseed/bundle"
    tree = bundle / "Qwen--Qwen2.5-0.5B-Test--master"
    assert {p: sha256((tree / p).read_bytes()) for p in model_files()} == {p: sha256(d) for p, d in model_files().items()}
    assert not list(bundle.glob("*.tar"))
    assert (bundle / "manifest.json.sig").read_text().startswith("-----BEGIN SSH SIGNATURE-----")
    assert "signed manifest.json (sha256" in first.stdout and f"manifest.json signed by {RELEASE}" in first.stdout

    fleet_report = json.loads(report.read_text())
    assert fleet_report["failed"] == []
    rows = {row["host"]: row for row in fleet_report["nodes"]}
    assert sorted(rows) == ["node2", "node3"]
    for row in rows.values():
        assert row["ready"] is True and row["complete"] is True and row["layout"] == "all"
        assert sorted(s["version"] for s in row["sdks"]) == sorted(SDK_VERSIONS)
        assert [(m["id"], m["bytes"]) for m in row["models"]] == [(MODEL, sum(len(d) for d in model_files().values()))]
        assert row["signature"] == f"verified by {RELEASE} (ssh-ed25519 key {fingerprint(release)})", row
    assert "node2" in first.stdout and re.search(r"node2\s+push\s+1/1", first.stdout)
    assert re.search(rf"node2\s+push\s+1/1 .* verified by {RELEASE}\s", first.stdout), first.stdout[-3000:]
    # Which commit each node holds: the one the staging host downloaded and said it did.
    commit = rows["node2"]["models"][0]["commit"]
    assert rows["node3"]["models"][0]["commit"] == commit and re.fullmatch("[0-9a-f]{40}", commit)
    assert re.search(rf"{re.escape(MODEL)}\s+master\s+{commit[:12]}\s+node2,node3", first.stdout), first.stdout[-3000:]
    assert f"(commit {commit[:12]})" in first.stdout

    # The real SDKs, from outside the node, against the node's cache and an online hub: zero file downloads.
    mark, tls_mark = len(hub.log), len(tls_hub.log)
    cache = fleet.node(2).path / "var/cache/modelscope"
    newest = sdk("1.40.2").snapshot(MODEL, cache, hub)
    oldest = sdk("1.37.1").snapshot(MODEL, cache, tls_hub, ca_bundle=tls.ca)
    assert newest.ok and oldest.ok, (newest.error, oldest.error)
    for result in (newest, oldest):
        assert {p: f["sha256"] for p, f in result.files.items() if p not in (".msc", ".mdl", ".mv")} == \
            {p: sha256(d) for p, d in model_files().items()}
    assert hub.log.downloads(mark) == {} and tls_hub.log.downloads(tls_mark) == {}

    # A second run changes nothing and downloads nothing: molecule's default and airgap scenarios prove it (their
    # idempotence steps, docs/testing.md). Check mode on the seeded fleet: runs end to end, reports no change, and
    # writes nothing on any node.
    before = node_state(fleet)
    check = seed(fleet, inv, "--check")
    assert changed_hosts(check) == {}, check.stdout
    assert node_state(fleet) == before


def test_check_mode_before_anything_exists_says_so(fleet, hub, sdk_pythons, tmp_path):
    inv = inventory(fleet, tmp_path / "inventory", {
        "modelseed_models": [{"name": MODEL}],
        "modelseed_cache_dir": "/var/cache/modelscope-never",
        "modelseed_bundle_dir": "/srv/modelseed/bundle-never",
        "modelseed_endpoint": hub.url,
        "modelseed_sdk_pythons": sdk_pythons,
        "modelseed_report_path": str(tmp_path / "report.json"),
    })
    before = node_state(fleet)
    check = seed(fleet, inv, "--check")
    assert "no bundle in /srv/modelseed/bundle-never on node1 yet" in check.stdout
    assert node_state(fleet) == before
    assert not any((node.path / "var/cache/modelscope-never").exists() for node in fleet.nodes)


def get(url: str, ca: Path, *, auth: bool = True, byte_range: str | None = None):
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"modelseed:{PASSWORD}".encode()).decode())
    if byte_range:
        request.add_header("Range", f"bytes={byte_range}")
    try:
        with urllib.request.urlopen(request, context=ssl.create_default_context(cafile=str(ca)), timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), b""


def test_pull_over_https_with_basic_auth_and_a_dead_mirror(fleet, hub, sdk_pythons, tmp_path):
    staging = fleet.node(1)
    certs = ensure_tls(tmp_path / "tls", staging.address)
    # The user's certificate on the staging host, and the CA on the nodes: files on their trees.
    tls_dir = staging.path / "etc/modelseed-tls"
    tls_dir.mkdir(exist_ok=True)
    shutil.copy(certs.cert, tls_dir / "server.pem")
    shutil.copy(certs.key, tls_dir / "server.key")
    for node in (2, 3):
        shutil.copy(certs.ca, fleet.node(node).path / "etc/modelseed-ca.pem")
    url = f"https://{staging.address}:8443/bundle/"
    report = tmp_path / "report.json"
    inv = inventory(fleet, tmp_path / "inventory", {
        "modelseed_models": [{"name": MODEL}],
        "modelseed_cache_dir": "/var/cache/modelscope-pull",
        "modelseed_transport": "pull",
        "modelseed_endpoint": hub.url,
        "modelseed_bundle_urls": ["https://127.0.0.1:9/bundle/", url],  # nothing listens on the first
        "modelseed_bundle_password": PASSWORD,
        "modelseed_bundle_ca_path": "/etc/modelseed-ca.pem",
        "modelseed_sdk_pythons": sdk_pythons,
        "modelseed_report_path": str(report),
        "modelseed_runtime_user": "nobody",
        "modelseed_runtime_group": "nogroup",
        "node_pull_retries": 1,
        "node_pull_retry_delay": 0,
    }, staging={
        "staging_http_port": 8443,
        "staging_http_tls_cert": "/etc/modelseed-tls/server.pem",
        "staging_http_tls_key": "/etc/modelseed-tls/server.key",
    })

    # Check mode first: nginx is not started, so no mirror serves the bundle yet, and the node play says so.
    before = node_state(fleet)
    check = seed(fleet, inv, "--check")
    assert "no mirror serves the bundle yet" in check.stdout
    assert node_state(fleet) == before

    first = seed(fleet, inv)
    assert set(changed_hosts(first)) == {"node1", "node2", "node3"}
    # Mirrors are spread: node2 starts with the dead one, fails over, and is seeded all the same.
    assert "https://127.0.0.1:9/bundle/: cannot fetch the bundle" in first.stdout
    assert re.search(r"node2\s+: .*rescued=1", first.stdout)
    nobody = pwd.getpwnam("nobody")
    for node in (2, 3):
        assert_seeded(fleet, node, "/var/cache/modelscope-pull")
        assert not (fleet.node(node).path / "var/cache/modelseed-bundle/Qwen--Qwen2.5-0.5B-Test--master.tar").exists()
        # Owned by the runtime user, who proved readiness with both SDKs (1.37 must write into the cache).
        model_dir = fleet.node(node).path / "var/cache/modelscope-pull/models" / ESCAPED
        assert (model_dir.stat().st_uid, (model_dir / "config.json").stat().st_uid) == (nobody.pw_uid, nobody.pw_uid)
    assert all(row["ready"] for row in json.loads(report.read_text())["nodes"])
    # No trust list: signatures are not looked at, and the report says so.
    assert [row["signature"] for row in json.loads(report.read_text())["nodes"]] == ["unverified", "unverified"]
    assert PASSWORD not in first.stdout + first.stderr
    assert PASSWORD not in (staging.path / "srv/modelseed/http/htpasswd").read_text()

    # nginx answers Range requests (what a node resumes with), wants the password, and hides dot-files.
    tar = (staging.path / "srv/modelseed/bundle/Qwen--Qwen2.5-0.5B-Test--master.tar").read_bytes()
    status, headers, body = get(url + "Qwen--Qwen2.5-0.5B-Test--master.tar", certs.ca, byte_range="1000-1999")
    assert status == 206 and headers["Content-Range"] == f"bytes 1000-1999/{len(tar)}" and body == tar[1000:2000]
    assert get(url + "manifest.json", certs.ca, auth=False)[0] == 401
    assert get(url + ".lock", certs.ca)[0] == 404
    # A second run changes nothing: molecule's pull scenario proves it (its idempotence step, docs/testing.md).


def test_local_transport_into_an_image_root(fleet, hub, tmp_path):
    """Golden image: the bundle is already in reach, nothing runs in the image, no hub address is set."""
    node = fleet.node(3)
    inv = inventory(fleet, tmp_path / "inventory", {
        "modelseed_models": [{"name": MODEL}],
        "modelseed_cache_dir": "/var/cache/modelscope",
        "modelseed_endpoint": hub.url,
        "modelseed_transport": "local",
        "modelseed_node_bundle_dir": "/var/tmp/bundle",
        "modelseed_node_endpoint": "",
        "modelseed_report_path": str(tmp_path / "report.json"),
        "node_image_root": "/var/tmp/image",
        "node_runtime_user": "0",
    })
    # The bundle the staging role writes for local transport (a tree of an "all" cache), made by its two modules here:
    # the other tests run the staging half, and this one is about the node half.
    staged = run_modules([
        {"modelseed.fleet.modelscope_model": {"name": MODEL, "cache_dir": str(tmp_path / "staging"), "endpoint": hub.url, "layout": "all"}},
        {"modelseed.fleet.cache_bundle": {"cache_dir": str(tmp_path / "staging"), "dest": str(node.path / "var/tmp/bundle"), "format": "tree"}},
    ], tmp_path)
    assert not any(result.get("failed") for result in staged), [result.get("msg") for result in staged]
    (node.path / "var/tmp/image/etc").mkdir(parents=True)
    real_environment = (node.path / "etc/environment").read_text()

    first = seed(fleet, inv, "--tags", "nodes", "--limit", "node3,localhost")
    assert set(changed_hosts(first)) == {"node3"}
    image = node.path / "var/tmp/image"
    model_dir = image / "var/cache/modelscope/models" / ESCAPED
    assert {str(p.relative_to(model_dir)): sha256(p.read_bytes()) for p in model_dir.rglob("*") if p.is_file()
            and p.name not in (".msc", ".mdl", ".mv")} == {p: sha256(d) for p, d in model_files().items()}
    assert (image / "etc/environment").read_text() == "MODELSCOPE_CACHE=/var/cache/modelscope\n"
    assert (node.path / "etc/environment").read_text() == real_environment  # the node's own /etc is not the image's
    assert (node.path / "var/tmp/bundle/Qwen--Qwen2.5-0.5B-Test--master/config.json").is_file()  # local bundles stay
    row = json.loads((tmp_path / "report.json").read_text())["nodes"][0]
    assert (row["host"], row["complete"], row["ready"], row["image_root"]) == ("node3", True, None, "/var/tmp/image")

    second = seed(fleet, inv, "--tags", "nodes", "--limit", "node3,localhost")
    assert changed_hosts(second) == {}, second.stdout


# Each bundle a node that trusts only RELEASE for "modelseed-bundle" must refuse, and the words that say why.
REFUSALS = {
    "unsigned": "the bundle is not signed (it has no manifest.json.sig)",
    "bad-signature": "manifest.json.sig does not match manifest.json",
    "stranger": "which {allowed} does not list for " + RELEASE,
    "other-namespace": "was made for namespace 'git', and this host accepts only 'modelseed-bundle'",
    "changed-manifest": "the manifest was changed after it was signed",
}


def refused_bundles(signed: Path, into: Path, release: Path, stranger: Path) -> None:
    """A copy of the signed bundle for each case of REFUSALS; SHA256SUMS always agrees with the manifest."""
    manifest = (signed / "manifest.json").read_bytes()
    for case in REFUSALS:
        bundle = into / case
        shutil.copytree(signed, bundle, ignore=shutil.ignore_patterns(".*"))
        signature = bundle / "manifest.json.sig"
        if case == "unsigned":
            signature.unlink()
        elif case == "bad-signature":
            lines = signature.read_text().splitlines()
            blob = bytearray(base64.b64decode("".join(lines[1:-1])))
            blob[-3] ^= 0x40  # inside the signature value
            signature.write_text("\n".join([lines[0], base64.b64encode(bytes(blob)).decode(), lines[-1]]) + "\n")
        elif case == "stranger":
            signature.write_bytes(ssh_sign(stranger, manifest))
        elif case == "other-namespace":
            signature.write_bytes(ssh_sign(release, manifest, "git"))
        else:
            changed = manifest.replace(b'"source_layout": "', b'"source_layout": "x', 1)
            assert changed != manifest
            (bundle / "manifest.json").write_bytes(changed)
            sums = (bundle / "SHA256SUMS").read_text().replace(sha256(manifest), sha256(changed))
            (bundle / "SHA256SUMS").write_text(sums)


def fingerprint(key: Path) -> str:
    return subprocess.run(["ssh-keygen", "-lf", f"{key}.pub"], capture_output=True, text=True, check=True).stdout.split()[1]


def test_every_bundle_the_trust_list_refuses_changes_nothing(fleet, hub, tmp_path):
    """One play on a node with a bundle for each way of failing its trust list: each is refused with its reason,
    and nothing on the node changes."""
    release, stranger = ssh_key(tmp_path / "keys" / "release"), ssh_key(tmp_path / "keys" / "stranger")
    node = fleet.node(2)
    (node.path / "etc/modelseed").mkdir(exist_ok=True)
    allowed_signers(node.path / "etc/modelseed/allowed_signers-refusals", {RELEASE: release})
    trust = {"allowed_signers": "/etc/modelseed/allowed_signers-refusals", "identities": [RELEASE]}
    inv = inventory(fleet, tmp_path / "inventory", {"modelseed_models": [{"name": MODEL}], "modelseed_endpoint": hub.url})
    # A small bundle of the sample model's layout: each case is refused before any tar is read.
    signed = write_bundle(tmp_path / "signed", [ModelSpec(MODEL, {"config.json": b"{}", "weights/model.bin": b"w" * 4096})])
    (signed / "manifest.json.sig").write_bytes(ssh_sign(release, (signed / "manifest.json").read_bytes()))
    refused_bundles(signed, node.path / "var/tmp/refused", release, stranger)

    results = tmp_path / "results.json"
    play = tmp_path / "refusals.yml"
    play.write_text(yaml.safe_dump([{
        "name": "Install bundles that the trust list must refuse", "hosts": "node2", "gather_facts": False,
        "tasks": [
            {"name": "Install", "modelseed.fleet.cache_install": {
                "src": "/var/tmp/refused/{{ item }}", "cache_dir": "/var/cache/modelscope-refused", "layout": "all", "trust": trust},
             "loop": sorted(REFUSALS), "register": "installs", "ignore_errors": True},
            # Saved by the controller (set_stats and the play_results callback), which starts no module.
            {"name": "Keep the results", "check_mode": False, "no_log": True, "ansible.builtin.set_stats": {
                "data": {RESULTS_STAT: {"path": str(results), "results": "{{ installs.results | to_json }}"}}, "per_host": False,
                "aggregate": False}},
        ]}]))
    before = node_state(fleet)
    proc = subprocess.run([*fleet.command_prefix, ANSIBLE_PLAYBOOK, "-i", str(inv), str(play)], env=results_env(ansible_env()),
                          capture_output=True, text=True, timeout=300, check=False)
    assert results.is_file(), proc.stdout[-5000:]
    outcomes = {r["item"]: (r.get("failed"), r.get("changed"), r["msg"]) for r in json.loads(results.read_text())}
    for case, words in REFUSALS.items():
        failed, changed, msg = outcomes[case]
        assert failed and not changed and words.format(allowed=trust["allowed_signers"]) in msg, (case, msg)
    assert node_state(fleet) == before
    assert not (node.path / "var/cache/modelscope-refused").exists()
