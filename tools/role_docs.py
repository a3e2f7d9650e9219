"""Write docs/variables.md from the roles' meta/argument_specs.yml and defaults/main.yml.

    python tools/role_docs.py           # rewrite docs/variables.md
    python tools/role_docs.py --check   # exit 1 when docs/variables.md is out of date

The shared settings (modelseed_*) are described here, once; which role variable reads which shared
setting is found in the roles' defaults.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
ROLES = ("staging", "node")
OUTPUT = REPO / "docs" / "variables.md"

# name: (description, default); the playbook reads the last two itself.
SHARED = {
    "modelseed_models": ("Models to seed: a list of `{name, revision, include, exclude}`; `revision` defaults to `master`, "
                         "`include`/`exclude` (glob patterns) to all files.", "required"),
    "modelseed_cache_dir": ("Cache root on every host, and the value `MODELSCOPE_CACHE` gets on the nodes.", "`/var/cache/modelscope`"),
    "modelseed_staging_cache_dir": ("Cache root of the staging host, when it must differ from `modelseed_cache_dir`.",
                                    "`modelseed_cache_dir`"),
    "modelseed_layout": ("Cache layout: `hub`, `models`, `snapshots`, `all` (every SDK from 1.15 on) or `auto` "
                         "(see [layouts.md](layouts.md)).", "`all`"),
    "modelseed_transport": ("How the bundle reaches the nodes: `push`, `pull`, `p2p` or `local` (see [transports.md](transports.md)). "
                            "`pull` and `p2p` also make the staging host serve the bundle; `p2p` also makes it run the swarm's "
                            "tracker (see [p2p.md](p2p.md)).", "`push`"),
    "modelseed_bundle_dir": ("Bundle directory on the staging host (and the directory `push` sends from).", "`/srv/modelseed/bundle`"),
    "modelseed_bundle_format": ("Bundle form the staging host writes: `tree` (a directory per model, what `push` sends) or `tar` "
                                "(what `pull` streams).", "`tar` with `pull`, else `tree`"),
    "modelseed_node_bundle_dir": ("Bundle directory on the nodes: where `push` puts its manifest, where `local` finds it.",
                                  "`/var/cache/modelseed-bundle`"),
    "modelseed_endpoint": ("Hub or internal mirror the staging host downloads from; also the nodes' `MODELSCOPE_ENDPOINT` unless "
                           "`modelseed_node_endpoint` is set.", "the public hub; nodes get none"),
    "modelseed_node_endpoint": ("`MODELSCOPE_ENDPOINT` for the nodes (an internal mirror, or a fast-failing address on an air-gapped "
                                "cluster).", "`modelseed_endpoint`"),
    "modelseed_token": ("ModelScope access token for private models (staging only; keep it in a vault).", "none"),
    "modelseed_ca_path": ("CA bundle on the staging host for a mirror with a private certificate.", "the system's"),
    "modelseed_bundle_urls": ("`pull`: URLs the bundle is published under, tried in turn (mirrors).",
                              "the staging host's nginx, when it ran in the same run"),
    "modelseed_bundle_username": ("User name for HTTP basic authentication to the bundle.", "`modelseed`"),
    "modelseed_bundle_password": ("Password for HTTP basic authentication; empty turns it off (keep it in a vault).", "none"),
    "modelseed_pull_proxy": ("`pull`: HTTP proxy the nodes reach the bundle through, `http://[user:password@]host:port` (a caching proxy; "
                             "see [transports.md](transports.md#pull-through-a-caching-proxy)); empty: none, whatever the nodes' "
                             "`http_proxy` says.", "the nodes' `http_proxy`, `https_proxy`, `no_proxy`"),
    "modelseed_bundle_ca_path": ("CA file on the nodes for an https bundle URL with a private certificate.", "the system's"),
    "modelseed_runtime_user": ("User of the serving stack on the nodes: owns the cache, runs the readiness check.", "`root`"),
    "modelseed_runtime_group": ("Group of the cache on the nodes.", "the user's"),
    "modelseed_sdk_pythons": ("Interpreters on the nodes with the `modelscope` SDK (for example a vLLM virtualenv), used to prove "
                              "readiness.", "`[/usr/bin/python3]`"),
    "modelseed_serial": ("Nodes seeded at a time (`serial` of the node play): a number or a percentage. A play keyword sees no "
                         "inventory variables: give it with `-e` (`-e modelseed_serial=4`), not in group_vars.", "`100%`"),
    "modelseed_report_path": ("Where the controller writes the JSON fleet report.", "`./modelseed-report.json`"),
    "modelseed_lock_file": ("The lock file on the controller (relative: to the directory `ansible-playbook` runs in): the downloads "
                            "fetch exactly the commits and files it pins, and it is written after them (see "
                            "[lock-file.md](lock-file.md)).", "none: no lock"),
    "modelseed_p2p_web_seed_peers": ("`p2p`: how many of the nodes that join a swarm fetch from the staging host's web seed; "
                                     "the others take every piece from the other peers, so that the staging host sends about one "
                                     "copy whatever the number of nodes (see [p2p.md](p2p.md)). `0`: every node.", "`2`"),
    "modelseed_lock_update": ("Models whose lock entry is replaced by what the hub says now: a list of model ids, or `all`.", "`[]`"),
    "modelseed_sign_key": ("Key that signs the bundle's `manifest.json`, on the controller (see [signing.md](signing.md)): an ssh "
                           "private key file, the `.pub` of a key in `ssh-agent`, or a GnuPG key id.", "none: unsigned"),
    "modelseed_sign_method": ("`ssh` (`ssh-keygen -Y`, OpenSSH 8.1 or newer) or `gpg` (`gpg` signs, `gpgv` verifies).", "`ssh`"),
    "modelseed_sign_namespace": ("What signatures are made and accepted for.", "`modelseed-bundle`"),
    "modelseed_sign_model_signing_key": ("Elliptic-curve private key (PEM) that also signs each model in the OpenSSF model-signing format.",
                                         "empty (none)"),
    "modelseed_trust_allowed_signers": ("`ssh`: an `allowed_signers` file on the nodes. Set, the nodes install only bundles signed "
                                        "by one of `modelseed_trust_identities`.", "none: signatures not needed"),
    "modelseed_trust_identities": ("`ssh`: principals of the `allowed_signers` file whose signatures the nodes accept; `gpg`: "
                                   "primary key fingerprints (empty: every key of the keyring).", "`[]`"),
    "modelseed_trust_keyring": ("`gpg`: a keyring file on the nodes (`gpg --export`). Set, the nodes install only bundles signed "
                                "by a key of it.", "none: signatures not needed"),
}

HEADER = """\
# Variables

<!-- Generated by tools/role_docs.py from roles/*/meta/argument_specs.yml and roles/*/defaults/main.yml. Do not edit. -->

`seed_models.yml` runs two roles, `modelseed.fleet.staging` on the `modelscope_staging` group and
`modelseed.fleet.node` on the `modelscope_nodes` group. What both halves need is set **once**, as the
`modelseed_*` settings below, usually in `group_vars/all.yml` beside the inventory (see
[`examples/`](../examples/)). Each role variable reads its shared setting by default; set the role
variable itself (per group or host) only to make one half differ.

## Shared settings

| setting | read by | meaning | default |
|---|---|---|---|
"""


def shared_readers() -> dict[str, list[str]]:
    readers: dict[str, list[str]] = {}
    for role in ROLES:
        for name, value in (yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text()) or {}).items():
            for setting in sorted(set(re.findall(r"\bmodelseed_\w+", str(value)))):
                readers.setdefault(setting, []).append(f"`{name}`")
    playbook = (REPO / "playbooks" / "seed_models.yml").read_text()
    for setting in ("modelseed_serial", "modelseed_report_path"):
        if setting in playbook:
            readers.setdefault(setting, []).append("the playbook")
    return readers


def text(value) -> str:
    """Ansible doc markup (C(), V(), O(), M()) as Markdown."""
    value = " ".join(value) if isinstance(value, list) else str(value)
    value = re.sub(r"[CVOM]\(([^)]*)\)", r"`\1`", value)
    return value.replace("|", "\\|").replace("\n", " ")


def default_of(name: str, spec: dict, defaults: dict) -> str:
    if name in defaults:
        value = defaults[name]
        if isinstance(value, str) and "{{" in value:
            return "derived, see description"
        return f"`{yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}`"
    return "required" if spec.get("required") else "none"


def role_section(role: str) -> str:
    base = REPO / "roles" / role
    specs = yaml.safe_load((base / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]
    defaults = yaml.safe_load((base / "defaults" / "main.yml").read_text()) or {}
    missing = sorted(set(defaults) - set(specs["options"]))
    if missing:
        raise SystemExit(f"roles/{role}: defaults without an argument spec: {', '.join(missing)}")
    lines = [f"## Role `modelseed.fleet.{role}`", "", text(specs["short_description"]) + ".", ""]
    lines += [f"- {text(item)}" for item in specs.get("description", [])]
    lines += ["", "| variable | type | default | description |", "|---|---|---|---|"]
    for name, spec in specs["options"].items():
        kind = spec.get("type", "str")
        if kind == "list" and spec.get("elements"):
            kind = f"list of {spec['elements']}"
        if spec.get("choices"):
            kind += " (" + ", ".join(f"`{c}`" for c in spec["choices"]) + ")"
        description = text(spec.get("description", ""))
        if spec.get("no_log"):
            description += " Secret: keep it in a vault."
        for sub, subspec in (spec.get("options") or {}).items():
            description += f" `{sub}`: {text(subspec.get('description', ''))}"
        lines.append(f"| `{name}` | {kind} | {default_of(name, spec, defaults)} | {description} |")
    return "\n".join(lines) + "\n"


def render() -> str:
    readers = shared_readers()
    unknown = sorted(set(readers) - set(SHARED))
    if unknown:
        raise SystemExit(f"tools/role_docs.py: describe the shared settings {', '.join(unknown)} in SHARED")
    rows = [f"| `{name}` | {', '.join(readers.get(name, ['-']))} | {description} | {default} |"
            for name, (description, default) in SHARED.items()]
    return HEADER + "\n".join(rows) + "\n\n" + "\n".join(role_section(role) for role in ROLES)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when docs/variables.md is out of date")
    args = parser.parse_args()
    content = render()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != content:
            print(f"{OUTPUT.relative_to(REPO)} is out of date: run python tools/role_docs.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(content)
    return 0


if __name__ == "__main__":
    sys.exit(main())
