"""``featkit cache ls`` and ``featkit cache prune``: each file's status against the data on disk,
and removing only what can no longer be used (dry run unless ``--yes``)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

import extractors
import featkit
from featkit.cache import key_lock, parts_dir
from featkit.cli import main
from featkit.extraction import extract
from featkit.inventory import scan
from featkit.testing.datasets import class_image, make_imagefolder


class _Stop(Exception):
    """Raised by the interrupting extractor (a killed run, in-process)."""


def _interrupted(cache: Path, root: Path, split: str) -> Path:
    """Extract ``split`` in shards of 2 and stop after the first: its ``.parts`` folder."""
    ex = extractors.load_extractor("pixels:8")
    forward, calls = ex.forward, []

    def once(images, kinds):
        calls.append(1)
        if len(calls) > 1:
            raise _Stop
        return forward(images, kinds)

    ex.forward = once
    before = set(cache.rglob("*.h5.parts"))
    with pytest.raises(_Stop):
        extract("pixels:8", "imagefolder", data_root=root, splits=[split], cache_dir=cache,
                shard_size=2, batch_size=2, progress=False, num_workers=0, extractor=ex)
    (parts,) = set(cache.rglob("*.h5.parts")) - before
    return parts


def _change_image(path: Path) -> None:
    class_image(1, 50, size=16).save(path)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))


@pytest.fixture
def messy_cache(tmp_path):
    """A cache with one file of each status (paths by status)."""
    cache = tmp_path / "cache"
    data = make_imagefolder(tmp_path / "data", n_classes=2, train_per_class=3, val_per_class=2,
                            test_per_class=3, image_size=16)
    run = dict(data_root=data.root, cache_dir=cache, progress=False, num_workers=0)
    complete = extract("pixels:8", "imagefolder", splits=["val"], **run)[0].path
    stale = extract("pixels:8", "imagefolder", splits=["test"], **run)[0].path
    corrupt = extract("pixels:8", "digits", splits=["val"], cache_dir=cache, progress=False)[0].path
    foreign = extract("pixels:8", "digits", splits=["test"], cache_dir=cache, progress=False)[0].path
    partial = _interrupted(cache, data.root, "train")
    copy = tmp_path / "copy"
    shutil.copytree(data.root, copy)
    orphan_shards = _interrupted(cache, copy, "test")
    for root in (data.root, copy):  # the test split changed: its file and shards are stale
        _change_image(root / data.ids("test")[0])
    assembled = parts_dir(complete)
    shutil.copytree(partial, assembled)  # shards left beside a final file
    with open(corrupt, "r+b") as handle:
        handle.truncate(corrupt.stat().st_size // 3)
    shutil.copyfile(complete, foreign)
    orphan_lock = stale.with_name("train-0123456789abcdef.h5.lock")
    orphan_lock.touch()
    orphan_temp = complete.with_name(f".{complete.name}.tmp-999999")
    orphan_temp.write_bytes(b"half a file")
    return {"cache": cache, "complete": complete, "stale": stale, "corrupt": corrupt,
            "foreign": foreign, "partial": partial, "orphan shards": orphan_shards,
            "assembled shards": assembled, "orphan lock": orphan_lock, "orphan temp": orphan_temp}


def _ls(cache: Path, capsys) -> dict[str, str]:
    assert main(["cache", "ls", "--cache-dir", str(cache), "--json"]) == 0
    return {row["path"]: row["status"] for row in json.loads(capsys.readouterr().out)}


def test_ls_names_each_status(messy_cache, capsys):
    statuses = _ls(messy_cache["cache"], capsys)
    expected = {"complete": "complete", "stale": "stale", "corrupt": "corrupt",
                "foreign": "foreign", "partial": "partial", "orphan shards": "orphan (the data",
                "assembled shards": "orphan (its final file exists", "orphan lock": "orphan lock",
                "orphan temp": "orphan temp"}
    for name, status in expected.items():
        assert statuses[str(messy_cache[name])].startswith(status), (name, statuses)
    assert main(["cache", "ls", "--cache-dir", str(messy_cache["cache"])]) == 0
    table = capsys.readouterr().out
    header = table.splitlines()[0].split()
    assert header == ["model", "dataset", "split", "n", "kinds", "key", "size", "status"]
    assert "imagefolder" in table and "visual" in table and "KB" in table


def test_prune_is_a_dry_run_unless_yes(messy_cache, capsys):
    cache = messy_cache["cache"]
    before = sorted(cache.rglob("*"))
    assert main(["cache", "prune", "--cache-dir", str(cache)]) == 0
    out, err = capsys.readouterr()
    assert sorted(cache.rglob("*")) == before
    assert "rerun with --yes" in err
    pruned = ("stale", "corrupt", "foreign", "orphan shards", "assembled shards", "orphan lock",
              "orphan temp")
    for name in pruned:
        assert str(messy_cache[name]) in out, name
    assert str(messy_cache["complete"]) + " " not in out and str(messy_cache["partial"]) not in out

    assert main(["cache", "prune", "--cache-dir", str(cache), "--yes"]) == 0
    capsys.readouterr()
    for name in pruned:
        assert not messy_cache[name].exists(), name
    assert messy_cache["complete"].exists() and messy_cache["partial"].is_dir()
    assert sorted(_ls(cache, capsys).values()) == ["complete", "partial"]
    assert len(featkit.load("pixels:8", "imagefolder", "val", cache_dir=cache)) == 4


def test_prune_keeps_what_a_running_extraction_holds(messy_cache, capsys):
    shards = messy_cache["orphan shards"]
    with key_lock(shards.with_name(shards.name.removesuffix(".parts"))):
        statuses = {e.path: e.status for e in scan(messy_cache["cache"])}
        assert statuses[shards] == "running"
        assert main(["cache", "prune", "--cache-dir", str(messy_cache["cache"]), "--yes"]) == 0
    assert shards.is_dir() and not messy_cache["corrupt"].exists()


def test_verify_reads_the_data(tmp_path, capsys):
    import h5py

    path = extract("pixels:8", "digits", splits=["val"], cache_dir=tmp_path, progress=False)[0].path
    with h5py.File(path, "r") as handle:
        offset = handle["features/visual"].id.get_chunk_info(0).byte_offset
    with open(path, "r+b") as handle:
        handle.seek(offset + 5)
        handle.write(b"\x00\xff")
    assert _ls(tmp_path, capsys) == {str(path): "complete"}  # structure and key are intact
    assert main(["cache", "ls", "--cache-dir", str(tmp_path), "--json", "--verify"]) == 0
    statuses = {row["path"]: row["status"] for row in json.loads(capsys.readouterr().out)}
    assert statuses[str(path)].startswith("corrupt (corrupt data in features/visual")


def test_no_cache_is_one_line(tmp_path, capsys):
    assert main(["cache", "ls", "--cache-dir", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.startswith("featkit: error: no cache under")


def test_class_embeddings_are_listed_and_pruned_like_image_files(tmp_path, capsys):
    """Zero-shot's class-embedding files under _text/ are listed (split 'text'); a corrupt one
    and an abandoned shard folder are pruned, a good one kept."""
    import numpy as np

    from featkit.classnames import resolve_templates
    from featkit.text_cache import TextSource, class_embeddings

    names = [str(d) for d in range(10)]
    source = TextSource("test:tiny-clip", cache_dir=tmp_path)
    good = class_embeddings(source, "digits", names, resolve_templates("simple")).path
    bad = class_embeddings(source, "digits", names, resolve_templates("digits")).path
    import h5py

    with h5py.File(bad, "r") as handle:  # flip one stored embedding byte: a checksum failure
        offset = handle["features/text"].id.get_chunk_info(0).byte_offset
    with open(bad, "r+b") as handle:
        handle.seek(offset + 17)
        byte = handle.read(1)
        handle.seek(offset + 17)
        handle.write(bytes([byte[0] ^ 0x10]))
    abandoned = good.with_name("prompts-simple-" + "0" * 16 + ".h5.parts")
    abandoned.mkdir()
    np.save(abandoned / "junk.npy", np.zeros(3))
    entries = {e.path: e for e in scan(tmp_path, verify=True)}
    assert entries[good].status == "complete" and entries[good].split == "text"
    assert entries[bad].status == "corrupt"
    assert entries[abandoned].status == "orphan"
    assert main(["cache", "prune", "--cache-dir", str(tmp_path), "--verify", "--yes"]) == 0
    assert good.exists() and not bad.exists() and not abandoned.exists()
    assert main(["cache", "ls", "--cache-dir", str(tmp_path)]) == 0
    assert "text" in capsys.readouterr().out
