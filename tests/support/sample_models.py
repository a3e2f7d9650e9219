"""The model repositories the integration tests publish on the test hub."""

from __future__ import annotations

import random

MODEL = "Qwen/Qwen2.5-0.5B-Test"
BIG = 3 << 20  # above the hub's redirect threshold, so served from "object storage"


def model_files(seed: int = 1) -> dict[str, bytes]:
    rng = random.Random(seed)
    return {
        "config.json": b'{"model_type": "qwen2"}',
        "tokenizer.json": rng.randbytes(4096),
        "weights/model-00001.bin": rng.randbytes(BIG),
        "weights/model-00002.bin": rng.randbytes(BIG // 2 + 7),
        ".hidden/settings.json": b'{"hidden": true}',
        "name with space.txt": b"spaces are legal in repo paths",
        "empty.txt": b"",
        ".gitattributes": b"*.bin filter=lfs diff=lfs merge=lfs -text\n",
    }
