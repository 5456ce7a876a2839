"""The prepared uint8 cache on a CheXpert-layout fixture of real label rows and generated images."""

import json
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from chexbench.core.errors import DataError
from chexbench.core.lock import folder_lock
from chexbench.datasets import cache as cache_mod
from chexbench.datasets.cache import ensure_prepared, open_prepared, prepare
from chexbench.datasets.chexpert import load_chexpert_index
from chexbench.datasets.decode import decode_image
from chexbench.datasets.fixtures import fixture_level, real_label_file, write_chexpert_layout, write_image
from chexbench.datasets.verify import verify

SIZE = 24


@pytest.fixture
def root(tmp_path):
    rows = pd.read_csv(real_label_file("chexpert"), nrows=60)
    pid = rows["Path"].str.split("/").str[2]
    return write_chexpert_layout(tmp_path / "data", rows[pid < "patient00016"], rows[pid >= "patient00016"])


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("CHEXBENCH_CACHE", str(tmp_path / "cache"))


def test_prepare_writes_index_and_pixels_that_match_the_sources(root, tmp_path):
    c = prepare("chexpert", root, SIZE, tmp_path / "out", workers=2)
    index = load_chexpert_index(root)
    pd.testing.assert_frame_equal(c.index, index)
    assert c.images.shape == (len(index), SIZE, SIZE) and c.images.dtype == np.uint8
    for i in range(len(index)):
        row = int(c.rows[i])
        np.testing.assert_array_equal(c.images[row], decode_image(root / index["path"].iloc[i], SIZE))
        assert abs(int(c.images[row][SIZE // 2, SIZE // 2]) - fixture_level(i)) <= 2  # the i-th written file
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["n_images"] == len(index) and m["n_skipped"] == 0 and m["size"] == SIZE
    assert set(m["label_files"]) == {str((root / "train.csv").resolve()), str((root / "valid.csv").resolve())}
    assert not (tmp_path / "out.partial").exists()


def test_parallel_and_sequential_decoding_agree(root, tmp_path):
    a = prepare("chexpert", root, SIZE, tmp_path / "a", workers=1)
    b = prepare("chexpert", root, SIZE, tmp_path / "b", workers=2)
    np.testing.assert_array_equal(np.asarray(a.images), np.asarray(b.images))


def _break_two_images(root):
    index = load_chexpert_index(root)
    missing, corrupt = index["path"].iloc[3], index["path"].iloc[7]
    (root / missing).unlink()
    (root / corrupt).write_bytes(b"not a jpeg at all")
    return index, missing, corrupt


def test_missing_and_corrupt_images_are_skipped_and_counted(root, tmp_path):
    index, missing, corrupt = _break_two_images(root)
    c = prepare("chexpert", root, SIZE, tmp_path / "out", workers=1)
    reasons = {s["path"]: s["reason"] for s in c.manifest["skipped"]}
    assert c.manifest["n_skipped"] == 2
    assert reasons[missing] == "missing file"
    assert "UnidentifiedImageError" in reasons[corrupt]
    assert len(c.index) == len(index) - 2 and missing not in set(c.index["path"])
    kept = index[~index["path"].isin([missing, corrupt])].reset_index(drop=True)
    for i in (0, 5, len(kept) - 1):  # rows still point at the right images after the gaps
        np.testing.assert_array_equal(c.images[c.rows[i]], decode_image(root / kept["path"].iloc[i], SIZE))


def test_strict_fails_on_the_first_bad_image_and_leaves_nothing(root, tmp_path):
    _, missing, corrupt = _break_two_images(root)
    out = tmp_path / "out"
    with pytest.raises(DataError, match="--strict") as e:
        prepare("chexpert", root, SIZE, out, workers=1, strict=True)
    assert f"{corrupt}: UnidentifiedImageError" in str(e.value) or f"{missing}: missing file" in str(e.value)
    assert not out.exists() and not (tmp_path / "out.partial").exists()


def test_an_interrupted_prepare_resumes_where_it_stopped(root, tmp_path, monkeypatch):
    monkeypatch.setattr(cache_mod, "CHUNK", 8)
    out = tmp_path / "out"

    def interrupt(done, total):
        if done >= 16:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare("chexpert", root, SIZE, out, workers=1, progress=interrupt)
    assert not out.exists() and (tmp_path / "out.partial" / "state.json").is_file()
    seen = []
    c = prepare("chexpert", root, SIZE, out, workers=1, progress=lambda d, t: seen.append(d))
    assert seen[0] == 16  # the first two chunks were not decoded again
    fresh = prepare("chexpert", root, SIZE, tmp_path / "fresh", workers=1)
    np.testing.assert_array_equal(np.asarray(c.images), np.asarray(fresh.images))
    assert not (tmp_path / "out.partial").exists()


def test_verify_detects_changed_images_and_label_files(root, tmp_path):
    c = prepare("chexpert", root, SIZE, tmp_path / "out", workers=1)
    assert verify(c).ok
    path = root / c.index["path"].iloc[2]
    write_image(path, 33)
    os.utime(path, ns=(1, 1))
    report = verify(open_prepared(tmp_path / "out"))
    assert report.changed_sources == [c.index["path"].iloc[2]]
    assert report.mismatched_pixels == [c.index["path"].iloc[2]]
    (root / "valid.csv").write_text((root / "valid.csv").read_text() + "\n")
    assert verify(c, sample=3).stale_label_files == [str((root / "valid.csv").resolve())]


def test_ensure_prepared_reuses_and_reindexes_without_decoding_again(root, monkeypatch):
    a = ensure_prepared("chexpert", root, SIZE)
    stamp = (a.dir / "images.u8").stat().st_mtime_ns
    assert ensure_prepared("chexpert", root, SIZE).dir == a.dir
    # a new label value: the index is rebuilt over the same pixels
    train = pd.read_csv(root / "train.csv")
    assert pd.isna(train.loc[0, "Cardiomegaly"])
    train.loc[0, "Cardiomegaly"] = 1.0
    train.to_csv(root / "train.csv", index=False)
    b = ensure_prepared("chexpert", root, SIZE)
    assert b.manifest["reindexed"] and (b.dir / "images.u8").stat().st_mtime_ns == stamp
    assert b.index["cardiomegaly"].iloc[0] == 1.0
    np.testing.assert_array_equal(b.images[b.rows[0]], decode_image(root / b.index["path"].iloc[0], SIZE))
    # another split rule (a loader constant) also re-indexes
    from chexbench.datasets import chexpert

    monkeypatch.setattr(chexpert, "CHEXPERT_VALID_FRACTION", 0.5)
    monkeypatch.setattr(chexpert.load_chexpert_index, "__defaults__", (0.5, chexpert.CHEXPERT_VALID_SEED))
    c = ensure_prepared("chexpert", root, SIZE)
    assert c.manifest["split_counts"]["valid"] > b.manifest["split_counts"]["valid"]
    assert (c.dir / "images.u8").stat().st_mtime_ns == stamp
    assert len(list(c.dir.glob("index*.parquet"))) == 1
    # a changed image file forces a full decode
    write_image(root / c.index["path"].iloc[1], 44)
    os.utime(root / c.index["path"].iloc[1], ns=(3, 3))
    (root / "valid.csv").write_text((root / "valid.csv").read_text())
    d = ensure_prepared("chexpert", root, SIZE)
    assert "reindexed" not in d.manifest and (d.dir / "images.u8").stat().st_mtime_ns != stamp
    assert verify(d).ok


def test_refuses_to_overwrite_a_folder_that_is_not_a_cache(root, tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("x")
    with pytest.raises(DataError, match="is not a prepared cache; refusing"):
        prepare("chexpert", root, SIZE, out)
    assert (out / "thesis.tex").exists()


def test_decode_aspect_16bit_and_colour(tmp_path):
    wide = np.tile(np.arange(64, dtype=np.uint8) * 4, (32, 1))  # 32 × 64 horizontal ramp
    Image.fromarray(wide).save(tmp_path / "wide.png")
    out = decode_image(tmp_path / "wide.png", 16)
    assert out.shape == (16, 16)
    # shorter side 32 → 16 halves the ramp; the centre crop keeps columns 16..47 of the source
    assert abs(int(out[8, 0]) - 4 * 16) <= 6 and abs(int(out[8, -1]) - 4 * 47) <= 6
    deep = (np.arange(40 * 40, dtype=np.uint16).reshape(40, 40) * 40).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    d = decode_image(tmp_path / "deep.png", 40)
    np.testing.assert_allclose(d, np.clip(deep * (255.0 / deep.max()), 0, 255).astype(np.uint8), atol=1)
    Image.fromarray(np.full((20, 20, 3), (200, 0, 0), np.uint8)).save(tmp_path / "rgb.png")
    assert decode_image(tmp_path / "rgb.png", 10)[5, 5] == round(0.299 * 200)


def _ensure_in_child(root, queue):
    c = ensure_prepared("chexpert", root, SIZE)
    queue.put((str(c.dir), int(np.asarray(c.images).sum())))


def test_concurrent_runs_prepare_the_same_cache_once(root):
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_ensure_in_child, args=(root, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert results[0] == results[1]
    c = ensure_prepared("chexpert", root, SIZE)
    assert verify(c).ok and str(c.dir) == results[0][0]


def test_a_smaller_size_is_derived_from_a_larger_prepared_cache(root):
    big = prepare("chexpert", root, 2 * SIZE, workers=1)
    small = ensure_prepared("chexpert", root, SIZE)
    assert small.manifest["derived_from"] == {"cache_id": big.cache_id, "size": 2 * SIZE}
    assert small.images.shape == (big.images.shape[0], SIZE, SIZE)
    direct = prepare("chexpert", root, SIZE, small.dir.parent / "direct", workers=1)
    diff = np.abs(np.asarray(small.images, dtype=int) - np.asarray(direct.images, dtype=int))
    assert diff.max() <= 16 and diff.mean() < 1.5  # same crop, one extra resampling (edges differ most)
    pd.testing.assert_frame_equal(small.index, direct.index)
    assert verify(small).ok
    write_image(root / small.index["path"].iloc[0], 41)
    assert verify(small).mismatched_pixels == [small.index["path"].iloc[0]]


def test_preparing_again_after_new_images_decodes_only_what_changed(root, tmp_path, monkeypatch):
    out = tmp_path / "out"
    first = prepare("chexpert", root, SIZE, out, workers=1)
    n = len(first.index)
    # one more study in train.csv (a new image), and one existing image rewritten
    train = pd.read_csv(root / "train.csv")
    extra = train.iloc[[0]].copy()
    extra["Path"] = extra["Path"].str.replace("study1/view1_frontal", "study9/view1_frontal")
    pd.concat([train, extra]).to_csv(root / "train.csv", index=False)
    write_image(root / extra["Path"].iloc[0].split("/", 1)[1], 7)
    changed = first.index["path"].iloc[4]
    write_image(root / changed, 45)
    os.utime(root / changed, ns=(5, 5))
    decoded = []
    real_decode = cache_mod.decode_image
    monkeypatch.setattr(cache_mod, "decode_image", lambda p, s: decoded.append(str(p)) or real_decode(p, s))
    second = prepare("chexpert", root, SIZE, out, workers=1)
    assert second.manifest["reused_images"] == n - 1
    assert sorted(decoded) == sorted(
        [str(root / changed), str(root / extra["Path"].iloc[0].split("/", 1)[1])]
    )
    monkeypatch.setattr(cache_mod, "decode_image", real_decode)
    assert verify(second).ok and len(second.index) == n + 1


def _race(stop, *targets, seconds: float = 8.0) -> None:
    """Run ``targets`` in threads until one sets ``stop`` (on a failure) or ``seconds`` pass."""
    import threading

    threads = [threading.Thread(target=t) for t in targets]
    for t in threads:
        t.start()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join()


def test_readers_never_miss_the_index_while_two_configs_reindex_the_same_cache(root):
    """Two processes whose loader constants differ share one prepared folder (the cache key
    does not hold the index fingerprint) and re-index it back and forth; a third keeps opening
    it. The reader must always get a whole index, never a missing or half-written file."""
    import threading

    from chexbench.datasets.reuse import reindex
    from chexbench.spec.registry import DATASETS

    folder = ensure_prepared("chexpert", root, SIZE).dir
    ds = DATASETS.get("chexpert")
    labels = cache_mod.label_file_fingerprint(ds, root)
    configs = [(labels, "a" * 64), (labels, "b" * 64)]
    stop, errors, opened = threading.Event(), [], []

    def writer():
        i = 0
        while not stop.is_set():
            try:
                with folder_lock(folder):
                    assert reindex(open_prepared(folder), ds, root, configs[i % 2]) is not None
            except Exception as e:  # noqa: BLE001
                errors.append(f"writer: {e!r}")
                stop.set()
            i += 1

    def reader():
        while not stop.is_set():
            try:
                c = open_prepared(folder)
                assert len(c.index) == len(c.rows) > 0
                opened.append(c.manifest["index_fingerprint"])
            except Exception as e:  # noqa: BLE001 - the failure under test is any of them
                errors.append(repr(e))
                stop.set()

    _race(stop, writer, reader, reader)
    assert errors == []
    assert {"a" * 64, "b" * 64} <= set(opened)  # the readers did see both configs' indexes


def test_ensure_prepared_waits_for_a_rebuild_in_progress_instead_of_failing(root):
    """Another process rebuilds the folder (``data prepare`` again), which is swapped out and in
    under the lock; a run calling ensure_prepared meanwhile gets the whole cache, old or new."""
    import threading

    first = ensure_prepared("chexpert", root, SIZE)
    stop, errors, opened = threading.Event(), [], []

    def rebuilder():
        while not stop.is_set():
            try:
                prepare("chexpert", root, SIZE, workers=1)
            except Exception as e:  # noqa: BLE001
                errors.append(f"rebuild: {e!r}")
                stop.set()

    def runner():
        while not stop.is_set():
            try:
                c = ensure_prepared("chexpert", root, SIZE)
                assert c.dir == first.dir and len(c.index) == len(first.index)
                opened.append(c)
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))
                stop.set()

    _race(stop, rebuilder, runner, runner)
    assert errors == [] and opened
