"""The demo: a bundled ModelScope-compatible hub on loopback, a small model, and a fleet of three local
nodes (each its own sshd in a bubblewrap sandbox with its own /etc and /var/cache). seed_models.yml
stages the model on node1 and pushes it to node2 and node3; a second run changes nothing; then the
real modelscope SDK loads the model on a node with no network.

    python tools/demo.py
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / ".build")]

from support.fleet import Fleet, new_state_dir  # noqa: E402
from support.mshub import MsHub, make_repo  # noqa: E402
from support.playbook import ANSIBLE_PLAYBOOK, ansible_env  # noqa: E402
from support.sdk import ensure_sdk  # noqa: E402

WORK = REPO / ".build" / "demo"
MODEL = "demo/Qwen2.5-Tiny-Demo"
SDK_VERSION = "1.40.2"
CACHE = "/var/cache/modelscope"  # MODELSCOPE_CACHE on every node


def demo_files() -> dict[str, bytes]:
    rng = random.Random(2024)
    return {
        "config.json": b'{"architectures": ["Qwen2ForCausalLM"], "hidden_size": 64, "model_type": "qwen2"}\n',
        "generation_config.json": b'{"do_sample": false}\n',
        "tokenizer.json": rng.randbytes(64 << 10),
        "model.safetensors": rng.randbytes(24 << 20),
        "README.md": b"# Qwen2.5-Tiny-Demo\n\nRandom weights for the modelseed.fleet demo.\n",
        ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
    }


def inventory(fleet: Fleet, hub: MsHub, sdk_python: Path) -> Path:
    """The fleet's hosts, and group_vars/all.yml: the settings both halves need, set once."""
    directory = WORK / "inventory"
    (directory / "group_vars").mkdir(parents=True)
    shutil.copy(fleet.inventory_path, directory / "hosts.yml")
    (directory / "group_vars" / "all.yml").write_text(f"""modelseed_models:
  - name: {MODEL}
modelseed_cache_dir: {CACHE}
modelseed_transport: push
modelseed_endpoint: {hub.url}
modelseed_report_path: {WORK / "report.json"}
modelseed_sdk_pythons: [{sdk_python}]
""")
    return directory


def let_staging_reach_nodes(fleet: Fleet) -> None:
    """node1 pushes to the others with rsync over ssh: give it the fleet's key and known hosts."""
    ssh_dir = fleet.node(1).path / "root" / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    shutil.copy(fleet.key, ssh_dir / "id_ed25519")
    (ssh_dir / "id_ed25519").chmod(0o600)
    shutil.copy(fleet.known_hosts, ssh_dir / "known_hosts")


def banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def main() -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    make_repo(WORK / "hub", MODEL, demo_files(), tags=["v1.0"])
    groups = {"modelscope_staging": [1], "modelscope_nodes": [2, 3]}
    sdk = ensure_sdk(SDK_VERSION)  # the nodes prove readiness with it, so they see its directory
    with MsHub(WORK / "hub") as hub, Fleet(new_state_dir("demo-"), 3, groups=groups, shared=[sdk.root.parent]) as fleet:
        banner(f"hub serving {MODEL} at {hub.url}; nodes " + ", ".join(
            f"node{n} at {fleet.node(n).address}" for n in (1, 2, 3)))
        let_staging_reach_nodes(fleet)
        command = [ANSIBLE_PLAYBOOK, "-i", str(inventory(fleet, hub, sdk.python)), str(REPO / "seed_models.yml")]
        for attempt in ("first run: download on node1, push to node2 and node3", "second run: nothing to do"):
            banner(f"ansible-playbook seed_models.yml ({attempt})")
            subprocess.run(command, env=ansible_env(), check=True)
        downloads = sum(hub.log.downloads().values())
        hub.stop()
        banner(f"hub stopped after serving {downloads} file downloads for the whole fleet; "
               f"node2 loads the model with modelscope {SDK_VERSION}, offline")
        node_cache = fleet.node(2).path / CACHE.lstrip("/")
        script = (
            "from modelscope import snapshot_download\n"
            f"path = snapshot_download({MODEL!r}, local_files_only=True)\n"
            "import os\n"
            "print('snapshot_download returned', path)\n"
            "for name in sorted(os.listdir(path)):\n"
            "    print('  ', name, os.path.getsize(os.path.join(path, name)), 'bytes')\n"
        )
        env = {"PATH": "/usr/bin:/bin", "HOME": str(WORK / "home"), "MODELSCOPE_CACHE": str(node_cache),
               "MODELSCOPE_ENDPOINT": "http://127.0.0.1:9"}  # nothing listens there: any request would fail
        subprocess.run([str(sdk.python), "-c", script], env=env, check=True)
    banner(f"done: fleet report in {WORK / 'report.json'}")


if __name__ == "__main__":
    os.umask(0o022)
    main()
