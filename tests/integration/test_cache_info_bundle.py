"""cache_info on a bundle directory: its models, and whether it verifies."""

from __future__ import annotations

from support.playbook import run_tasks
from support.sample_models import MODEL


def test_bundle_report_and_verification(hub, tmp_path):
    cache, bundle = tmp_path / "cache", tmp_path / "bundle"
    setup = run_tasks([
        {"modelseed.fleet.modelscope_model": {"name": MODEL, "cache_dir": str(cache), "endpoint": hub.url, "layout": "all"}},
        {"modelseed.fleet.cache_bundle": {"cache_dir": str(cache), "dest": str(bundle), "models": [{"name": MODEL}]}},
    ])
    assert not any(r.get("failed") for r in setup.results), [r.get("msg") for r in setup.results]
    quick = {"modelseed.fleet.cache_info": {"bundle": str(bundle)}}
    full = {"modelseed.fleet.cache_info": {"bundle": str(bundle), "verify": "full"}}

    report = run_tasks([{**quick, "check_mode": True}])[0]
    assert report["bundle"]["verified"] and report["problems"] == [] and report["cache_dir"] is None
    (model,) = report["bundle"]["models"]
    assert model["id"] == MODEL and model["ok"] and model["files"] == 8

    tar = bundle / model["tar"]
    data = bytearray(tar.read_bytes())
    data[2000] ^= 0xFF  # same size, one byte off
    tar.write_bytes(bytes(data))
    quick_run, full_run = run_tasks([quick, full]).results
    assert quick_run["bundle"]["verified"]  # sizes alone cannot tell
    assert not full_run["bundle"]["verified"] and "does not match its sha256" in full_run["problems"][0]

    (bundle / "manifest.json").write_text((bundle / "manifest.json").read_text().replace('"master"', '"main"'))
    tampered = run_tasks([quick])[0]
    assert not tampered["bundle"]["verified"] and "SHA256SUMS" in tampered["bundle"]["error"]
