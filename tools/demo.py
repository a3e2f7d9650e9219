"""The demo: a bundled ModelScope-compatible hub on loopback, a small model, seed_models.yml, then the
real modelscope SDK loading the model with no network.

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

from support.mshub import MsHub, make_repo  # noqa: E402
from support.playbook import ANSIBLE_PLAYBOOK, ansible_env  # noqa: E402
from support.sdk import ensure_sdk  # noqa: E402

WORK = REPO / ".build" / "demo"
MODEL = "demo/Qwen2.5-Tiny-Demo"
SDK_VERSION = "1.40.2"


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


def inventory(hub: MsHub, cache: Path) -> Path:
    path = WORK / "inventory.yml"
    path.write_text(f"""all:
  vars:
    modelseed_models:
      - name: {MODEL}
    modelseed_cache_dir: {cache}
    modelseed_endpoint: {hub.url}
  children:
    modelscope_staging:
      hosts:
        staging:
          ansible_connection: local
          ansible_python_interpreter: {sys.executable}
""")
    return path


def banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def main() -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    make_repo(WORK / "hub", MODEL, demo_files(), tags=["v1.0"])
    cache = WORK / "cache"
    with MsHub(WORK / "hub") as hub:
        banner(f"hub serving {MODEL} at {hub.url}")
        command = [ANSIBLE_PLAYBOOK, "-i", str(inventory(hub, cache)), str(REPO / "seed_models.yml")]
        for attempt in ("first run: downloads", "second run: nothing to do"):
            banner(f"ansible-playbook seed_models.yml ({attempt})")
            subprocess.run(command, env=ansible_env(), check=True)
        downloads = sum(hub.log.downloads().values())
    banner(f"hub stopped after serving {downloads} file downloads; loading with modelscope {SDK_VERSION}, offline")
    sdk = ensure_sdk(SDK_VERSION)
    script = (
        "from modelscope import snapshot_download\n"
        f"path = snapshot_download({MODEL!r}, local_files_only=True)\n"
        "import os\n"
        "print('snapshot_download returned', path)\n"
        "for name in sorted(os.listdir(path)):\n"
        "    print('  ', name, os.path.getsize(os.path.join(path, name)), 'bytes')\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(WORK / "home"), "MODELSCOPE_CACHE": str(cache),
           "MODELSCOPE_ENDPOINT": "http://127.0.0.1:9"}  # nothing listens there: any request would fail
    subprocess.run([str(sdk.python), "-c", script], env=env, check=True)
    banner(f"done: MODELSCOPE_CACHE={cache}")


if __name__ == "__main__":
    os.umask(0o022)
    main()
