"""Bad input through ansible-playbook: every case fails with a message that names what is wrong, and writes nothing.

Each case runs against a copy of a real cache (downloaded from the test hub, or installed from a bundle) inside
a directory of its own: the cache, the bundle and that directory must be exactly as they were afterwards.
Crafted tars are the hostile-bundle table of test_cache_install.py; this file adds crafted manifests and
checks that the two tables together cover every kind of hostile bundle.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from integration.test_cache_install import FIRST, HOSTILE, UPDATE, BundleServer, install, leftovers, victim  # noqa: F401  # victim is a fixture; pylint: disable=unused-import

from support.bundles import ModelSpec, write_bundle
from support.interrupt import tree_digest
from support.module_process import run_modules
from support.playbook import REPO, ansible_env, run_tasks
from support.reliability import record
from support.sample_models import MODEL
from support.table_play import Row, run_table, table_play

pytestmark = [pytest.mark.hostile]

FAILS_CLEANLY = "fails clearly, nothing written"
LONG_ID = "owner/" + "n" * 300


@pytest.fixture(scope="module")
def downloaded(hub, tmp_path_factory):
    """A cache holding MODEL, downloaded from the hub; cases work on copies."""
    cache = tmp_path_factory.mktemp("downloaded") / "cache"
    result = run_modules([download(hub.url, cache)], cache.parent)[0]
    assert not result.get("failed"), result["msg"]
    return cache


def download(endpoint: str, cache: Path, **options) -> dict:
    return {"modelseed.fleet.modelscope_model": {"name": MODEL, "cache_dir": str(cache), "endpoint": endpoint, "layout": "all",
                                                 "retries": 0, **options}}


def snapshot(work: Path, new_locks_allowed: bool) -> dict[str, str]:
    """Everything a case could touch: every entry below ``work`` (its caches and bundles).

    ``new_locks_allowed``: empty flock files of a cache's models may appear (an install takes each model's lock
    before it reads that model's tar), as in test_cache_install.py; nothing else may."""
    digest = tree_digest(work, skip_locks=False)
    if new_locks_allowed:
        digest = {rel: entry for rel, entry in digest.items() if "/.modelseed/locks/" not in f"/{rel}"}
    return digest


def copy_tree(source: Path, target: Path) -> Path:
    subprocess.run(["cp", "-a", str(source), str(target)], check=True)
    return target


def look(work: Path, new_locks_allowed: bool = False, also_unchanged: tuple[Path, ...] = ()) -> tuple[dict[str, str], dict[Path, list[str]]]:
    """What a case compares before and after its run: ``work`` (``snapshot``), and the entries of ``also_unchanged``."""
    return snapshot(work, new_locks_allowed), {path: sorted(p.name for p in path.iterdir()) for path in also_unchanged}


def run_case(fault: str, task: dict, message: str, work: Path, also_unchanged: tuple[Path, ...] = (),
             new_locks_allowed: bool = False) -> dict:
    """Run ``task``; count it; then demand a failure naming ``message`` and ``work`` (and the root's entries) unchanged."""
    row = run_table({fault: task}, lambda _case: look(work, new_locks_allowed, also_unchanged))[fault]
    return judge_case(fault, row, message)


def judge_case(fault: str, row: Row, message: str) -> dict:
    """Count a case's run (``row``, with ``look`` before and after it); then demand a failure naming ``message`` and
    nothing changed."""
    result, (before, outside), (after, outside_after) = row.result, row.before, row.after
    unchanged = after == before and outside_after == outside
    handled = bool(result.get("failed")) and message in (result.get("msg") or "") and "Traceback" not in str(result)
    record(fault, outcome=FAILS_CLEANLY, handled=int(handled and unchanged))
    assert result.get("failed"), f"accepted: {result.get('msg')}"
    assert message in result["msg"], result["msg"]
    assert "MODULE FAILURE" not in result["msg"] and "Module failed" not in result["msg"], result["msg"]
    assert after == before, sorted(set(after.items()) ^ set(before.items()))
    for path, names in outside.items():
        assert outside_after[path] == names, path
    return result


def case_dirs(tmp_path_factory, name: str, cases: list[str]) -> dict[str, Path]:
    """An empty directory of its own for each case of a table."""
    top = tmp_path_factory.mktemp(name)
    dirs = {case: top / f"case-{index}" for index, case in enumerate(cases)}
    for path in dirs.values():
        path.mkdir()
    return dirs


# -- modelscope_model ------------------------------------------------------------------------------

MODEL_CASES = [
    # (case, fault class, options, what the message must say)
    ("id ../etc", "bad input: model id", {"name": "../etc"}, "invalid model id '../etc'"),
    ("id /abs", "bad input: model id", {"name": "/abs"}, "invalid model id '/abs'"),
    ("id a/b/c", "bad input: model id", {"name": "a/b/c"}, "invalid model id 'a/b/c'"),
    ("id owner/..", "bad input: model id", {"name": "owner/.."}, "invalid model id 'owner/..'"),
    ("id empty", "bad input: model id", {"name": ""}, "invalid model id ''"),
    ("id unicode", "bad input: model id", {"name": "Qwen/通义千问"}, "invalid model id 'Qwen/通义千问'"),
    ("id 300 chars", "bad input: model id", {"name": LONG_ID}, f"invalid model id '{LONG_ID}'"),
    ("id with spaces", "bad input: model id", {"name": "Qwen/Qwen 2.5"}, "invalid model id 'Qwen/Qwen 2.5'"),
    ("id a list", "bad input: model id", {"name": ["Qwen", "x"]}, "invalid model id"),
    ("id not on the hub", "bad input: model id", {"name": "nobody/no-such-model"}, "model nobody/no-such-model not found"),
    ("unknown branch", "bad input: revision", {"revision": "no-such-branch"}, "unknown revision 'no-such-branch'"),
    ("revision ../x", "bad input: revision", {"revision": "../x"}, "invalid revision '../x'"),
    ("revision empty", "bad input: revision", {"revision": ""}, "invalid revision ''"),
    ("revision a/b", "bad input: revision", {"revision": "feature/x"}, "invalid revision 'feature/x'"),
    # A selection that matches nothing is a mistake in the task: an empty "success" would seed nodes with nothing.
    ("include matches nothing", "bad input: file patterns", {"include": ["*.safetensors"]}, "no file matches include ['*.safetensors']"),
    ("exclude drops everything", "bad input: file patterns", {"exclude": ["*"]}, "no file matches include [] and exclude ['*']"),
    ("include a mapping", "bad input: option type", {"include": {"a": 1}}, "argument 'include' is of type dict"),
    ("workers a word", "bad input: option type", {"workers": "many"}, "argument 'workers' is of type str"),
    ("workers zero", "bad input: option type", {"workers": 0}, "workers must be >= 1"),
    ("retries negative", "bad input: option type", {"retries": -1}, "retries >= 0"),
    ("retry_delay negative", "bad input: option type", {"retry_delay": -1}, "retry_delay >= 0"),
    ("timeout a word", "bad input: option type", {"timeout": "soon"}, "argument 'timeout' is of type str"),
    ("timeout zero", "bad input: option type", {"timeout": 0}, "timeout > 0"),
    ("validate_certs a word", "bad input: option type", {"validate_certs": "perhaps"}, "argument 'validate_certs' is of type str"),
    ("layout unknown", "bad input: option type", {"layout": "flat"}, "value of layout must be one of"),
    ("state unknown", "bad input: option type", {"state": "gone"}, "value of state must be one of"),
    ("lock_timeout a word", "bad input: option type", {"lock_timeout": "later"}, "argument 'lock_timeout' is of type str"),
    ("lock_timeout negative", "bad input: option type", {"lock_timeout": -5}, "lock_timeout >= 0"),
    ("adopt_from missing", "bad input: option type", {"adopt_from": "/nonexistent/aria2"}, "adopt_from /nonexistent/aria2 is not a directory"),
]


@pytest.fixture(scope="module")
def model_rows(hub, downloaded, tmp_path_factory) -> dict[str, Row]:
    """Every case of MODEL_CASES on a copy of the downloaded cache, in one play."""
    dirs = case_dirs(tmp_path_factory, "model-cases", [c[0] for c in MODEL_CASES])
    tasks = {case: download(hub.url, copy_tree(downloaded, dirs[case] / "cache"), **options) for case, _f, options, _m in MODEL_CASES}
    return run_table(tasks, lambda case: look(dirs[case]))


@table_play("bad input: modelscope_model")
@pytest.mark.parametrize("case, fault, options, message", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_modelscope_model_refuses(model_rows, case, fault, options, message):
    judge_case(fault, model_rows[case], message)


def test_cache_dir_that_is_a_file(hub, tmp_path):
    (tmp_path / "cache").write_text("not a cache")
    run_case("bad input: cache_dir", download(hub.url, tmp_path / "cache"), f"cache_dir {tmp_path / 'cache'} exists and is not a directory",
             tmp_path)


def test_cache_dir_below_a_file(hub, tmp_path):
    (tmp_path / "file").write_text("not a directory")
    run_case("bad input: cache_dir", download(hub.url, tmp_path / "file" / "sub" / "cache"),
             f"cache_dir {tmp_path / 'file/sub/cache'} cannot be created: {tmp_path / 'file'} is not a directory", tmp_path)


def test_cache_dir_root(hub, tmp_path):
    run_case("bad input: cache_dir", download(hub.url, Path("/")), "cache_dir must not be the root directory", tmp_path,
             also_unchanged=(Path("/"),))


def test_certificate_the_host_does_not_trust(tls_hub, downloaded, tmp_path):
    """A self-signed hub over TLS, no ca_path: refused by default, before anything is written."""
    cache = copy_tree(downloaded, tmp_path / "cache")
    result = run_case("bad input: untrusted certificate", download(tls_hub.url, cache), "TLS certificate", tmp_path)
    assert "not trusted" in result["msg"] and tls_hub.domain in result["msg"], result["msg"]


def test_turning_certificate_checks_off_is_never_silent(tls_hub, tls, tmp_path):
    """validate_certs=false works, and each run says which server it did not check."""
    cache = tmp_path / "cache"
    bundle = write_bundle(tmp_path / "bundle", [ModelSpec("o/other", {"a.bin": b"a" * 100})])
    with BundleServer(bundle, tls=tls) as server:
        run = run_tasks([download(tls_hub.url, cache, validate_certs=False),
                         install(server.url, cache, validate_certs=False)])
    unchecked = [f"the TLS certificate of {tls_hub.domain} is not verified", f"the TLS certificate of {server.url.split('/')[2]} is not verified"]
    warned = [any(text in warning for warning in result.get("warnings", [])) for result, text in zip(run.results, unchecked, strict=True)]
    worked = not any(result.get("failed") for result in run.results)
    record("bad input: certificate checks turned off", outcome="works, with a warning naming the server", injected=2,
           handled=sum(warned) if worked else 0)
    assert worked, [result.get("msg") for result in run.results]
    assert all(warned), [result.get("warnings") for result in run.results]


def documentation(text):
    """The DOCUMENTATION of a module or doc fragment, parsed."""
    return yaml.safe_load(text.split("DOCUMENTATION = r'''", 1)[1].split("'''", 1)[0]) if "DOCUMENTATION" in text else {}


def test_certificate_checks_are_on_unless_a_task_turns_them_off():
    """No module option and no role variable that could turn TLS verification off defaults to doing so."""
    found = []
    for module in sorted((REPO / "plugins/modules").glob("*.py")):
        text = module.read_text()
        doc = documentation(text)
        options = dict(doc.get("options") or {})
        for fragment in doc.get("extends_documentation_fragment") or []:  # the collection's own fragments
            if fragment.startswith("modelseed.fleet."):
                path = REPO / "plugins/doc_fragments" / (fragment.rsplit(".", 1)[1] + ".py")
                options.update(documentation(path.read_text()).get("options") or {})
        for name, spec in options.items():
            if "validate_certs" in name or "insecure" in name or name.startswith("verify_ssl"):
                found.append((module.stem, name, spec.get("default")))
    for role in ("staging", "node"):
        specs = yaml.safe_load((REPO / "roles" / role / "meta/argument_specs.yml").read_text())
        defaults = yaml.safe_load((REPO / "roles" / role / "defaults/main.yml").read_text())
        for name, spec in specs["argument_specs"]["main"]["options"].items():
            if "validate_certs" in name or "insecure" in name:
                found.append((role, name, spec.get("default")))
                found.append((f"{role} defaults", name, defaults.get(name)))
    record("bad input: TLS verification off by default", outcome="no option turns it off by default",
           handled=int(bool(found) and all(default is True for _where, _name, default in found)))
    assert {where for where, _name, _default in found} >= {"modelscope_model", "cache_install", "staging", "node"}, found
    assert all(default is True for _where, _name, default in found), found


# -- cache_bundle, cache_install, cache_info -------------------------------------------------------


def bundle_task(cache: Path, dest: Path, options: dict) -> dict:
    return {"modelseed.fleet.cache_bundle": {"cache_dir": str(cache), "dest": str(dest), "models": [{"name": MODEL}], **options}}


BUNDLE_CASES = [
    ("model id ../etc", "bad input: model id", {"models": [{"name": "../etc"}]}, "invalid model id '../etc'"),
    ("model not in the cache", "bad input: model id", {"models": [{"name": "nobody/absent"}]}, "nobody/absent@master: not found in"),
    ("revision ../x", "bad input: revision", {"models": [{"name": MODEL, "revision": "../x"}]}, "invalid revision '../x'"),
    ("revision not in the cache", "bad input: revision", {"models": [{"name": MODEL, "revision": "v9"}]},
     "@v9: models/Qwen/Qwen2___5-0___5B-Test holds revision 'master'"),
    ("models a string", "bad input: option type", {"models": MODEL}, "dictionary requested"),
    ("verify unknown", "bad input: option type", {"verify": "sometimes"}, "value of verify must be one of"),
    ("lock_timeout negative", "bad input: option type", {"lock_timeout": -1}, "lock_timeout must be >= 0"),
    ("dest a file", "bad input: destination", {"dest": "{work}/afile"}, "exists and is not a directory"),
    ("dest the root", "bad input: destination", {"dest": "/"}, "dest must be a directory of its own, not /"),
    ("dest the cache", "bad input: destination", {"dest": "{work}/cache"}, "dest must be a directory of its own"),
    ("cache_dir the root", "bad input: cache_dir", {"cache_dir": "/"}, "cache_dir must not be the root directory"),
    ("cache_dir a file", "bad input: cache_dir", {"cache_dir": "{work}/afile"}, "exists and is not a directory"),
]


def prepare(work: Path, downloaded: Path) -> Path:
    """A case's directory: a copy of the downloaded cache, a bundle of another model, a plain file, an empty directory."""
    cache = copy_tree(downloaded, work / "cache")
    write_bundle(work / "bundle", [ModelSpec("o/other", {"a.bin": b"a" * 100})])
    (work / "afile").write_text("a file")
    (work / "empty").mkdir()
    return cache


def placed(options: dict, work: Path) -> dict:
    """``options`` with {work} in string values replaced by the case's directory."""
    return {key: value.format(work=work) if isinstance(value, str) else value for key, value in options.items()}


@pytest.fixture(scope="module")
def bundle_rows(downloaded, tmp_path_factory) -> dict[str, Row]:
    """Every case of BUNDLE_CASES in a prepared directory of its own, in one play."""
    dirs = case_dirs(tmp_path_factory, "bundle-cases", [c[0] for c in BUNDLE_CASES])
    tasks = {case: bundle_task(prepare(dirs[case], downloaded), dirs[case] / "new-bundle", placed(options, dirs[case]))
             for case, _f, options, _m in BUNDLE_CASES}
    return run_table(tasks, lambda case: look(dirs[case]))


@table_play("bad input: cache_bundle")
@pytest.mark.parametrize("case, fault, options, message", BUNDLE_CASES, ids=[c[0] for c in BUNDLE_CASES])
def test_cache_bundle_refuses(bundle_rows, case, fault, options, message):
    judge_case(fault, bundle_rows[case], message)


INSTALL_CASES = [
    ("src missing", "bad input: bundle path", {"src": "{work}/no-bundle"}, "src {work}/no-bundle is not a directory holding a bundle"),
    ("src a file", "bad input: bundle path", {"src": "{work}/afile"}, "is not a directory holding a bundle"),
    ("src another scheme", "bad input: bundle path", {"src": "ftp://127.0.0.1/bundle"}, "only a directory or an http(s) URL"),
    ("src a directory without a bundle", "bad input: bundle path", {"src": "{work}/empty"}, "SHA256SUMS is missing from the bundle"),
    ("cache_dir the root", "bad input: cache_dir", {"cache_dir": "/"}, "cache_dir must not be the root directory"),
    ("cache_dir a file", "bad input: cache_dir", {"cache_dir": "{work}/afile"}, "exists and is not a directory"),
    ("workers a word", "bad input: option type", {"workers": "four"}, "argument 'workers' is of type str"),
    ("workers zero", "bad input: option type", {"workers": 0}, "workers must be >= 1"),
    ("retry_delay a word", "bad input: option type", {"retry_delay": "soon"}, "argument 'retry_delay' is of type str"),
    ("file_mode a list", "bad input: option type", {"file_mode": [6, 4, 4]}, "file_mode must be an octal mode"),
    ("dir_mode world-writable", "bad input: option type", {"dir_mode": "0777"}, "never be world-writable"),
    ("owner unknown", "bad input: option type", {"owner": "no-such-user-here"}, "owner 'no-such-user-here' does not exist"),
    ("prune a word", "bad input: option type", {"prune": "sometimes"}, "argument 'prune' is of type str"),
    ("password without user", "bad input: option type", {"url_password": "x"}, "parameters are required together"),
    ("proxy not plain http", "bad input: option type", {"src": "http://127.0.0.1:9/bundle", "proxy": "https://fleet:pw@127.0.0.1:3128"},
     "proxy: a proxy is http://[user:password@]host:port, got https://127.0.0.1:3128"),
]


@pytest.fixture(scope="module")
def install_dirs(tmp_path_factory) -> dict[str, Path]:
    return case_dirs(tmp_path_factory, "install-cases", [c[0] for c in INSTALL_CASES])


@pytest.fixture(scope="module")
def install_rows(downloaded, install_dirs) -> dict[str, Row]:
    """Every case of INSTALL_CASES in a prepared directory of its own, in one play."""
    tasks = {}
    for case, _fault, options, _message in INSTALL_CASES:
        work = install_dirs[case]
        tasks[case] = install(work / "bundle", prepare(work, downloaded))
        tasks[case]["modelseed.fleet.cache_install"].update(placed(options, work))
    return run_table(tasks, lambda case: look(install_dirs[case]))


@table_play("bad input: cache_install")
@pytest.mark.parametrize("case, fault, options, message", INSTALL_CASES, ids=[c[0] for c in INSTALL_CASES])
def test_cache_install_refuses(install_rows, install_dirs, case, fault, options, message):
    judge_case(fault, install_rows[case], message.format(work=install_dirs[case]))


def test_an_adhoc_run_reads_like_the_play(tmp_path):
    """`ansible -m modelseed.fleet.cache_install` with a plain mistake shows the module's message, as a play does: no
    exception, no traceback, even with -vvv; and with tracebacks turned on, only where the module failed, as for
    ansible.builtin modules, not an exception raised deep in the bundle reader."""
    (tmp_path / "empty").mkdir()
    empty = (f"src={tmp_path / 'empty'} cache_dir={tmp_path / 'cache'}", f"SHA256SUMS is missing from the bundle in {tmp_path / 'empty'}")
    no_user = (f"{empty[0]} owner=no-such-user-here", "owner 'no-such-user-here' does not exist")
    runs = [(*empty, ["-vvv"], {}), (*empty, [], {"ANSIBLE_DISPLAY_TRACEBACK": "error"}), (*no_user, ["-vvv"], {})]
    command = [str(Path(sys.executable).with_name("ansible")), "localhost", "-i", "localhost,", "-c", "local",
               "-e", f"ansible_python_interpreter={sys.executable}", "-m", "modelseed.fleet.cache_install", "-a"]
    problems = []
    for args, message, extra, env in runs:
        proc = subprocess.run([*command, args, *extra], env=ansible_env(**env), capture_output=True, text=True, timeout=120, check=False)
        out = proc.stdout + proc.stderr
        wrong = [text for text in ("exception occurred", "MODULE FAILURE", "BundleError", "During handling")
                 + (() if env else ("Traceback",)) if text.lower() in out.lower()]
        if proc.returncode != 2 or f"Task failed: Module failed: {message}" not in out or f'"msg": "{message}' not in out or wrong:
            problems.append((extra, env, wrong, out))
    record("bad input: ad-hoc run", outcome="the module's message, no exception", injected=len(runs), handled=len(runs) - len(problems))
    assert not problems, problems
    assert not (tmp_path / "cache").exists()


INFO_CASES = [
    ("bundle missing", "bad input: bundle path", {"bundle": "{work}/no-bundle"}, "bundle {work}/no-bundle is not a directory"),
    ("bundle a file", "bad input: bundle path", {"bundle": "{work}/afile"}, "bundle {work}/afile is not a directory"),
    ("verify unknown", "bad input: option type", {"bundle": "{work}/bundle", "verify": "deep"}, "value of verify must be one of"),
    ("cache_dir a file", "bad input: cache_dir", {"cache_dir": "{work}/afile"}, "cache_dir {work}/afile exists and is not a directory"),
]


@pytest.fixture(scope="module")
def info_dirs(tmp_path_factory) -> dict[str, Path]:
    return case_dirs(tmp_path_factory, "info-cases", [c[0] for c in INFO_CASES])


@pytest.fixture(scope="module")
def info_rows(downloaded, info_dirs) -> dict[str, Row]:
    """Every case of INFO_CASES in a prepared directory of its own, in one play."""
    for work in info_dirs.values():
        prepare(work, downloaded)
    tasks = {case: {"modelseed.fleet.cache_info": placed(options, info_dirs[case])} for case, _f, options, _m in INFO_CASES}
    return run_table(tasks, lambda case: look(info_dirs[case]))


@table_play("bad input: cache_info")
@pytest.mark.parametrize("case, fault, options, message", INFO_CASES, ids=[c[0] for c in INFO_CASES])
def test_cache_info_refuses(info_rows, info_dirs, case, fault, options, message):
    judge_case(fault, info_rows[case], message.format(work=info_dirs[case]))


# -- crafted manifests ---------------------------------------------------------------------------------


def _set(*path_and_value):
    """A patch_model that sets entry[k1][k2]... = value (ints index lists)."""
    *path, key, value = path_and_value

    def patch(entry):
        target = entry
        for step in path:
            target = target[step]
        target[key] = value
    return patch


def _huge_file(entry):
    entry["files"][0]["size"] = 1 << 62
    entry["bytes"] = sum(f["size"] for f in entry["files"])


def _nested(depth):
    return b"[" * depth + b"]" * depth


MANIFESTS = {
    # case: (class, write_bundle options, what cache_install must say)
    "not JSON": ("bad JSON", {"manifest": b'{"format": "modelseed.fleet/bundle", '}, "manifest: not valid JSON"),
    "not UTF-8": ("bad JSON", {"manifest": b'\xff\xfe{"format": 1}'}, "manifest: not valid JSON"),
    "nested a million deep": ("bad JSON", {"manifest": _nested(1 << 20)}, "manifest: not valid JSON: nested too deeply"),
    "a list, not an object": ("wrong types", {"manifest": b"[]"}, "not a modelseed.fleet/bundle manifest"),
    "id a number": ("wrong types", {"patch_model": _set("id", 42)}, "manifest: invalid model id 42"),
    "revision a list": ("wrong types", {"patch_model": _set("revision", ["master"])}, "manifest: invalid revision ['master']"),
    "files an object": ("wrong types", {"patch_model": _set("files", {"config.json": 1})}, "has no file list"),
    "size a string": ("wrong types", {"patch_model": _set("files", 0, "size", "23")}, "size must be a non-negative integer"),
    "size a bool": ("wrong types", {"patch_model": _set("files", 0, "size", True)}, "size must be a non-negative integer"),
    "size negative": ("wrong types", {"patch_model": _set("files", 0, "size", -1)}, "size must be a non-negative integer"),
    "sha256 a number": ("wrong types", {"patch_model": _set("files", 0, "sha256", 0)}, "sha256 must be a lowercase sha256"),
    "created_at a float": ("wrong types", {"patch_model": _set("created_at", 1.5e9)}, "created_at must be a non-negative integer"),
    "created_at 10**40": ("huge values", {"patch_model": _set("created_at", 10 ** 40)}, "created_at must be a non-negative integer"),
    "tar_size 2**64": ("huge values", {"patch_model": _set("tar_size", 1 << 64)}, "tar_size must be a non-negative integer"),
    "tar_size 2**62": ("huge values", {"patch_model": _set("tar_size", 1 << 62)}, "the manifest says 4611686018427387904"),
    "a file of 4 EiB": ("huge values", {"patch_model": _huge_file}, "tar can hold"),
    "manifest of 65 MiB": ("huge values", {"manifest": b" " * (65 << 20)}, "manifest.json is larger than"),
}


@pytest.fixture(scope="module")
def manifest_rows(victim, tmp_path_factory) -> tuple[dict[str, Row], dict[str, Row], dict[str, Path]]:  # noqa: F811 (victim is the fixture)
    """Every crafted manifest installed over a copy of the victim cache, in one play; then cache_info of each
    bundle, in another: (install rows, cache_info rows, each case's directory)."""
    dirs = case_dirs(tmp_path_factory, "manifest-cases", sorted(MANIFESTS))
    installs, infos = {}, {}
    for case, work in dirs.items():
        bundle = write_bundle(work / "bundle", [FIRST, UPDATE], **MANIFESTS[case][1])
        installs[case] = install(bundle, copy_tree(victim, work / "cache"))
        infos[case] = {"modelseed.fleet.cache_info": {"bundle": str(bundle)}}
    installed = run_table(installs, lambda case: look(dirs[case], new_locks_allowed=True))
    return installed, run_table(infos), dirs


@table_play("bad input: crafted manifests")
@pytest.mark.parametrize("case", sorted(MANIFESTS))
def test_crafted_manifest_is_refused_and_reported(manifest_rows, case):
    installed, infos, dirs = manifest_rows
    kind, _options, message = MANIFESTS[case]
    cache = dirs[case] / "cache"
    result = judge_case(f"bad input: crafted manifest ({kind})", installed[case], message)
    assert not leftovers(cache) and not (cache / "models/a/first").exists(), result["msg"]
    # cache_info reads the same bundle without failing, and says it does not verify.
    info = infos[case].result
    assert not info.get("failed") and info["bundle"]["verified"] is False and info["problems"], info


# Every kind of hostile bundle, and the cases of the two tables that show it is refused.
HOSTILE_KINDS = {
    "path traversal": ["dotdot", "dotdot in a pax path"],
    "absolute path": ["absolute"],
    "symlink escaping the model": ["symlink out", "symlink up"],
    "hard link": ["hardlink"],
    "device or FIFO": ["char device", "block device", "fifo"],
    "a member both file and directory": ["file and directory", "directory as file", "inside a file"],
    "bad JSON": [case for case, (kind, _o, _m) in MANIFESTS.items() if kind == "bad JSON"],
    "wrong types": [case for case, (kind, _o, _m) in MANIFESTS.items() if kind == "wrong types"],
    "huge values": [case for case, (kind, _o, _m) in MANIFESTS.items() if kind == "huge values"],
}


def test_the_tables_cover_every_kind_of_hostile_bundle():
    missing = {kind: [case for case in cases if case not in HOSTILE and case not in MANIFESTS] for kind, cases in HOSTILE_KINDS.items()}
    assert all(HOSTILE_KINDS.values()), HOSTILE_KINDS
    assert not any(missing.values()), missing


def test_option_types_of_the_environment_and_readiness_modules(tmp_path):
    """The two modules that never touch a cache refuse wrong types too, before writing anything."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    cases = [
        ({"modelseed.fleet.modelscope_env": {"variables": ["MODELSCOPE_CACHE"], "root": str(root)}}, "argument 'variables' is of type list"),
        ({"modelseed.fleet.modelscope_env": {"variables": {"BAD NAME": "x"}, "root": str(root)}}, "'BAD NAME' is not a valid environment"),
        ({"modelseed.fleet.modelscope_env": {"variables": {"A": "x\ny"}, "root": str(root)}}, "must not contain newlines"),
        ({"modelseed.fleet.modelscope_env": {"variables": {"A": "x"}, "targets": ["registry"], "root": str(root)}}, "value of targets must be"),
        ({"modelseed.fleet.modelscope_ready": {"models": MODEL, "pythons": ["/usr/bin/python3"]}}, "dictionary requested"),
        ({"modelseed.fleet.modelscope_ready": {"models": [{"name": "../x"}], "pythons": ["/usr/bin/python3"],
                                               "cache_dir": str(root)}}, "invalid model id '../x'"),
        ({"modelseed.fleet.modelscope_ready": {"models": [{"name": 7}], "pythons": ["/usr/bin/python3"],
                                               "cache_dir": str(root)}}, "invalid model id"),
    ]
    rows = run_table({f"case {index}": task for index, (task, _message) in enumerate(cases)}, lambda _case: look(tmp_path))
    for index, (_task, message) in enumerate(cases):
        judge_case("bad input: option type", rows[f"case {index}"], message)
