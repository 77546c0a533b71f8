"""Finding named weights: caches first, the network only when reachable, one-line errors."""

from __future__ import annotations

import socket

import pytest

from extractors import pretrained as pt
from featkit.errors import MissingWeightsError


@pytest.fixture()
def env(monkeypatch, tmp_path):
    for name in pt.OFFLINE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(pt, "_REACHABLE", {})
    return tmp_path


def _hub_file(cache, repo_id, filename, content=b"w"):
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text("rev1")
    path = repo / "snapshots" / "rev1" / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_cached_hub_file_wins_in_filename_order(env):
    source = pt.WeightsSource("m", (pt.HubFile("org/repo", ("a.safetensors", "a.bin")),))
    assert pt.find_cached(source) is None
    bin_file = _hub_file(env / "hf", "org/repo", "a.bin")
    assert pt.find_cached(source) == bin_file
    safe = _hub_file(env / "hf", "org/repo", "a.safetensors")
    assert pt.resolve_weights(source) == safe


def test_url_cache(env):
    candidate = pt.UrlFile("https://example.org/x/weights.pt", str(env / "urlcache"))
    source = pt.WeightsSource("m", (pt.HubFile("org/none", ("w.bin",)), candidate))
    (env / "urlcache").mkdir()
    (env / "urlcache" / "weights.pt").write_bytes(b"w")
    assert pt.find_cached(source) == env / "urlcache" / "weights.pt"


def test_offline_switch_gives_one_line_without_network(env, monkeypatch):
    def no_network(url):
        raise AssertionError("offline: no probe")

    monkeypatch.setattr(pt, "reachable", no_network)
    monkeypatch.setenv("FEATKIT_OFFLINE", "1")
    source = pt.WeightsSource("fam:model", (pt.HubFile("org/repo", ("w.safetensors",)),), "pass --weights PATH")
    with pytest.raises(MissingWeightsError) as info:
        pt.resolve_weights(source)
    message = str(info.value)
    assert "\n" not in message
    for part in ("fam:model", "org/repo (w.safetensors)", "FEATKIT_OFFLINE is set", "pass --weights PATH", str(env / "hf")):
        assert part in message


def test_unreachable_host_is_not_retried(env, monkeypatch):
    probes = []
    monkeypatch.setattr(pt, "reachable", lambda url: probes.append(url) or False)
    monkeypatch.setattr(pt, "_download", lambda c: pytest.fail("no download when unreachable"))
    source = pt.WeightsSource("m", (pt.HubFile("org/repo", ("w.bin",)),), "fix")
    with pytest.raises(MissingWeightsError, match="huggingface.co is unreachable"):
        pt.resolve_weights(source)
    assert probes == [pt.hf_endpoint()]


def test_reachable_host_downloads_and_failures_are_reported(env, monkeypatch, tmp_path):
    monkeypatch.setattr(pt, "reachable", lambda url: True)
    got = tmp_path / "downloaded.bin"
    monkeypatch.setattr(pt, "_download", lambda c: got)
    source = pt.WeightsSource("m", (pt.HubFile("org/repo", ("w.bin",)),), "fix")
    assert pt.resolve_weights(source) == got

    def fail(candidate):
        raise OSError("401 gated repo\nmore")

    monkeypatch.setattr(pt, "_download", fail)
    with pytest.raises(MissingWeightsError, match=r"\(download failed: OSError: 401 gated repo\); fix$"):
        pt.resolve_weights(source)


def test_probe_goes_to_the_configured_proxy(env, monkeypatch):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    try:
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
        assert pt.reachable("https://no-such-host.invalid") is True  # the proxy answered
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        closed_port = closed.getsockname()[1]
        closed.close()
        monkeypatch.setattr(pt, "_REACHABLE", {})
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{closed_port}")
        assert pt.reachable("https://no-such-host.invalid") is False
    finally:
        listener.close()


def test_find_checkpoint(tmp_path):
    (tmp_path / "b.safetensors").write_bytes(b"1")
    (tmp_path / "config.json").write_text("{}")
    assert pt.find_checkpoint(tmp_path, ("model.safetensors",)) == tmp_path / "b.safetensors"
    (tmp_path / "model.safetensors").write_bytes(b"2")
    assert pt.find_checkpoint(tmp_path, ("model.safetensors",)) == tmp_path / "model.safetensors"
    with pytest.raises(MissingWeightsError, match="several weights files"):
        pt.find_checkpoint(tmp_path, ("other.bin",))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MissingWeightsError, match="no weights file"):
        pt.find_checkpoint(empty, ("model.safetensors",))
