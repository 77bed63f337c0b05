"""The LMDB feature store: ids, writing, resume, publishing, reading, verification, gc."""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import lmdb
import numpy as np
import pytest
from featurestore_fixture import (
    DIMS,
    corrupt_value,
    expected,
    image_id,
    image_item,
    make_inputs,
    reader_worker,
    write_set,
)

from featurestore import (
    REQUIRED_INPUTS,
    AlreadyExists,
    ChecksumError,
    FeatureSet,
    FeatureStore,
    FeatureStoreError,
    IncompatibleFeatureSet,
    NotFound,
    WriterBusy,
    feature_set_id,
)


@pytest.fixture
def store(tmp_path: Path) -> FeatureStore:
    return FeatureStore(tmp_path / "features")


def _meta_without_time(fs: FeatureSet) -> dict:
    meta = dict(fs.meta)
    meta.pop("created")
    return meta


# -- ids ----------------------------------------------------------------------------------


def test_same_inputs_same_id_whatever_the_spelling() -> None:
    a = make_inputs()
    b = dict(reversed(list(make_inputs().items())))  # other key order
    b["grid"] = {
        "stride_fraction": 0.1 + 0.2 - 0.3 + 1 / 3,
        "scales": (1, 1.3, 1.6),
    }  # tuple, ints, float noise
    assert feature_set_id(a) == feature_set_id(b)
    assert len(feature_set_id(a)) == 16 and int(feature_set_id(a), 16) >= 0
    assert feature_set_id(make_inputs(size=np.int64(3))) == feature_set_id(make_inputs(size=3))


@pytest.mark.parametrize(
    "change",
    [
        {"trunk_digest": "sha256:trunk1"},
        {"layers": ["fc7"]},
        {"grid": {"scales": [1.0, 1.3], "stride_fraction": 1 / 3}},
        {
            "preprocessing": {
                "size": 224,
                "mean": [0.485, 0.456, 0.406],
                "std": [0.229, 0.224, 0.225],
            }
        },
        {"mode": "full"},
        {"dataset_digest": "sha256:tinyvoc1"},
        {"extractor_version": "2"},
        {"extra": "anything"},
    ],
    ids=lambda c: next(iter(c)),
)
def test_any_changed_input_changes_the_id(change: dict) -> None:
    assert feature_set_id(make_inputs(**change)) != feature_set_id(make_inputs())


@pytest.mark.parametrize("key", REQUIRED_INPUTS)
def test_every_required_input_is_checked(key: str) -> None:
    inputs = make_inputs()
    del inputs[key]
    with pytest.raises(FeatureStoreError, match=key):
        feature_set_id(inputs)


def test_unhashable_inputs_are_refused() -> None:
    with pytest.raises(FeatureStoreError, match="not finite"):
        feature_set_id(make_inputs(mode=float("nan")))
    with pytest.raises(FeatureStoreError, match="cannot be hashed"):
        feature_set_id(make_inputs(mode=object()))


# -- writing and reading ------------------------------------------------------------------


def test_round_trip_values_manifest_and_meta(store: FeatureStore) -> None:
    fs = write_set(store, 12)
    assert fs.id == feature_set_id(make_inputs()) and store.exists(fs.id)
    assert fs.image_ids() == [image_id(i) for i in range(12)]
    cols = {"window": [], "label": [], "scale": [], "box": [], "split": [], "image_id": []}
    for i in range(12):
        name, feats, win = image_item(i)
        for layer in DIMS:
            got = fs.get(name, layer)
            assert got.dtype == np.float16 and got.shape == feats[layer].shape
            assert np.array_equal(got, feats[layer].astype(np.float16))
            assert not got.flags.writeable and not got.flags.owndata  # a view into the map
        n = len(win["label"])
        cols["window"] += list(range(n))
        cols["label"] += win["label"].tolist()
        cols["scale"] += np.float32(win["scale"]).tolist()
        cols["box"].append(win["boxes"])
        cols["split"] += [win["split"]] * n
        cols["image_id"] += [name] * n
    assert fs.column("window").tolist() == cols["window"]
    assert fs.labels().tolist() == cols["label"]
    assert fs.column("scale").tolist() == cols["scale"]
    assert np.array_equal(fs.column("box"), np.concatenate(cols["box"]))
    assert fs.column("split").tolist() == cols["split"]
    assert fs.column("image_id").tolist() == cols["image_id"]
    meta = json.loads((fs.path / "meta.json").read_text())
    assert meta["inputs"]["trunk_digest"] == "sha256:trunk0" and meta["layers"] == DIMS
    assert meta["run_id"] == "run-extract" and meta["info"] == {"trunk_run": "run-trunk"}
    assert meta["counts"]["images"] == 12 and meta["counts"]["windows"] == len(cols["window"])
    assert sum(meta["counts"]["per_label"].values()) == len(cols["window"])
    assert meta["counts"]["per_split"]["val"]["images"] == 4  # images 0, 3, 6, 9
    assert sorted(os.listdir(fs.path)) == ["index.parquet", "lmdb", "manifest.parquet", "meta.json"]
    assert fs.verify() == []


def test_get_verify_and_errors(store: FeatureStore) -> None:
    fs = write_set(store, 3)
    assert np.array_equal(
        fs.get(image_id(1), verify=True), expected(1, "fc7")
    )  # fc7 is the default
    assert len(fs.get_many([image_id(2), image_id(0)], "c5")) == 2
    with pytest.raises(NotFound, match="img9999"):
        fs.get("img9999")
    with pytest.raises(NotFound, match="'fc8'"):
        fs.get(image_id(0), "fc8")
    with pytest.raises(NotFound, match="no feature set"):
        store.open("0123456789abcdef")


def test_nothing_visible_before_commit(store: FeatureStore) -> None:
    fid = feature_set_id(make_inputs())
    w = store.writer(make_inputs(), DIMS)
    w.put(*image_item(0))
    assert not store.exists(fid) and not (store.root / fid).exists()
    with pytest.raises(NotFound):
        store.open(fid)
    [entry] = store.list()
    assert not entry.complete and entry.writer_pid == str(os.getpid())
    w.put(*image_item(1))
    fs = w.commit()
    assert store.exists(fid) and fs.path == store.root / fid
    assert not (store.root / f".tmp-{fid}").exists()
    with pytest.raises(FeatureStoreError, match="closed"):
        w.put(*image_item(2))
    with pytest.raises(AlreadyExists, match=fid):
        store.writer(make_inputs(), DIMS)


def test_second_live_writer_is_refused(store: FeatureStore) -> None:
    first = store.writer(make_inputs(), DIMS)
    with pytest.raises(WriterBusy, match=str(os.getpid())):
        store.writer(make_inputs(), DIMS)
    first.abort()
    store.writer(make_inputs(), DIMS).abort()


def test_put_validates_its_arguments(store: FeatureStore) -> None:
    w = store.writer(make_inputs(), DIMS)
    name, feats, win = image_item(0)
    with pytest.raises(IncompatibleFeatureSet, match="layers"):
        w.put(name, {"fc7": feats["fc7"]}, win)
    with pytest.raises(IncompatibleFeatureSet, match=r"expected \(3, 24\)"):
        w.put(name, {**feats, "fc7": feats["fc7"][:, :5]}, win)
    with pytest.raises(FeatureStoreError, match="float16's range"):
        w.put(name, {**feats, "c5": feats["c5"] * 1e6}, win)
    with pytest.raises(FeatureStoreError, match="lack split"):
        w.put(name, feats, {k: v for k, v in win.items() if k != "split"})
    with pytest.raises(FeatureStoreError, match="n >= 1"):
        w.put(name, {k: v[:0] for k, v in feats.items()}, {**win, "boxes": np.zeros((0, 4))})
    with pytest.raises(IncompatibleFeatureSet, match="positive dim"):
        store.writer(make_inputs(), {"fc7": 24})
    assert w.done() == set()
    w.abort()


def test_resume_needs_the_same_layer_dims(store: FeatureStore) -> None:
    w = store.writer(make_inputs(), DIMS)
    w.put(*image_item(0))
    w.abort()
    with pytest.raises(IncompatibleFeatureSet, match="partial set was started"):
        store.writer(make_inputs(), {"fc7": 24, "c5": 9})


def _assert_same_sets(a: FeatureSet, b: FeatureSet) -> None:
    assert a.id == b.id and a.image_ids() == b.image_ids()
    assert a.manifest.equals(b.manifest)
    assert _meta_without_time(a) == _meta_without_time(b)
    for layer in DIMS:
        assert np.array_equal(a.materialize(layer=layer), b.materialize(layer=layer))


def test_resume_after_a_dropped_writer_equals_a_clean_run(
    tmp_path: Path, store: FeatureStore
) -> None:
    w = store.writer(make_inputs(), DIMS, meta={"trunk_run": "run-trunk"})
    for i in range(0, 20, 2):  # out of order: half the images
        w.put(*image_item(i))
    del w  # crash without commit
    w = store.writer(make_inputs(), DIMS, meta={"trunk_run": "run-trunk"})
    assert w.done() == {image_id(i) for i in range(0, 20, 2)}
    w.put_many(image_item(i) for i in range(20) if image_id(i) not in w.done())
    resumed = w.commit(run_id="run-extract")
    clean = write_set(FeatureStore(tmp_path / "clean"), 20)
    _assert_same_sets(resumed, clean)


_KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, sys.argv[2])
    from featurestore import FeatureStore
    from featurestore_fixture import DIMS, image_item, make_inputs
    w = FeatureStore(sys.argv[1]).writer(make_inputs(), DIMS, meta={"trunk_run": "run-trunk"})
    for i in range(40):
        w.put(*image_item(i))
        print(i, flush=True)
        time.sleep(0.02)
    """
)


@pytest.mark.slow
def test_resume_after_sigkill_equals_a_clean_run(tmp_path: Path, store: FeatureStore) -> None:
    tests_dir = str(Path(__file__).parent)
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(store.root), tests_dir],
        stdout=subprocess.PIPE,
        text=True,
    )
    printed = [int(proc.stdout.readline()) for _ in range(10)]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL and not store.exists(feature_set_id(make_inputs()))
    w = store.writer(make_inputs(), DIMS, meta={"trunk_run": "run-trunk"})
    done = w.done()
    assert {image_id(i) for i in printed} <= done and len(done) <= 12  # at most the puts in flight
    for i in range(40):
        if image_id(i) not in done:
            w.put(*image_item(i))
    resumed = w.commit(run_id="run-extract")
    _assert_same_sets(resumed, write_set(FeatureStore(tmp_path / "clean"), 40))


def test_a_full_map_grows_instead_of_failing(
    store: FeatureStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "featurestore")
    w = store.writer(make_inputs(), DIMS, map_size=32 << 10)
    big = {
        "fc7": np.ones((900, DIMS["fc7"]), np.float32),
        "c5": np.zeros((900, DIMS["c5"]), np.float32),
    }
    windows = {
        "boxes": np.zeros((900, 4)),
        "scale": 1.0,
        "label": np.zeros(900, np.int32),
        "split": "train",
    }
    for i in range(4):
        w.put(f"big{i}", big, windows)
    fs = w.commit()
    assert "growing" in caplog.text
    assert fs.verify() == [] and np.all(fs.get("big3") == 1)


# -- verification --------------------------------------------------------------------------


def test_verify_names_exactly_the_corrupt_image(store: FeatureStore) -> None:
    fs = write_set(store, 10)
    corrupt_value(fs, image_id(7), "fc7")
    fresh = store.open(fs.id)
    problems = fresh.verify()
    assert len(problems) == 1 and "checksum mismatch" in problems[0]
    assert (problems[0].image_id, problems[0].layer) == (image_id(7), "fc7")
    assert "'img0007'" in problems[0] and "'fc7'" in problems[0]
    with pytest.raises(ChecksumError, match="'img0007' layer 'fc7'"):
        fresh.get(image_id(7), "fc7", verify=True)
    fresh.get(image_id(7), "c5", verify=True)
    fresh.get(image_id(6), "fc7", verify=True)


def test_verify_finds_missing_extra_and_miscounted_values(store: FeatureStore) -> None:
    fs = write_set(store, 5)
    env = lmdb.open(str(fs.path / "lmdb"), max_dbs=4)
    db = env.open_db(b"features")
    with env.begin(write=True, db=db) as txn:
        txn.delete(b"c5/img0002")
        txn.put(b"fc7/stranger", txn.get(b"fc7/img0001"))
        txn.put(
            b"fc7/img0003", txn.get(b"fc7/img0004")
        )  # another image's value: wrong window count
    env.close()
    problems = store.open(fs.id).verify()
    named = {(p.image_id, p.layer) for p in problems}
    assert named == {("img0002", "c5"), ("stranger", "fc7"), ("img0003", "fc7"), (None, None)}
    assert any("missing" in p for p in problems) and any("extra" in p for p in problems)
    assert any("changed after commit" in p for p in problems)  # the saved locations are stale


def test_readers_use_saved_locations_and_fall_back_to_a_scan(
    store: FeatureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import featurestore.reader

    fs = write_set(store, 9)
    rows = np.arange(len(fs))[::-3]
    want = np.concatenate([expected(i, "fc7") for i in range(9)])[rows]

    def no_scan(*args, **kwargs):
        raise AssertionError("a reader scanned the B-tree")

    with monkeypatch.context() as m:
        m.setattr(featurestore.reader, "scan_values", no_scan)
        fresh = store.open(fs.id)
        assert np.array_equal(fresh.read_rows(rows), want)
        assert np.array_equal(fresh.get(image_id(4), "c5"), expected(4, "c5"))
    index = fs.path / "index.parquet"
    damaged = bytearray(index.read_bytes())
    damaged[len(damaged) // 3] ^= 0xFF
    index.write_bytes(bytes(damaged))
    fallback = store.open(fs.id)
    assert np.array_equal(fallback.read_rows(rows), want)
    assert [p for p in fallback.verify()] == [
        f"feature set {fs.id}: index.parquet: missing or damaged (readers fall back to a slow scan)"
    ]


# -- selections and materialisation ----------------------------------------------------------


def test_select_filters_and_groups(store: FeatureStore) -> None:
    fs = write_set(store, 15)
    split, label = fs.column("split"), fs.labels()
    sel = fs.select(split="val", labels=[1, 3])
    want = np.flatnonzero((split == "val") & np.isin(label, [1, 3]))
    assert np.array_equal(sel.rows, want) and len(sel) == len(want)
    assert set(fs.labels(sel)) <= {1, 3} and set(fs.column("split", sel)) == {"val"}
    for name, rows in sel.groups():
        assert set(fs.column("image_id")[rows]) == {name}
    assert sum(sel.counts) == len(sel)
    some = fs.select(image_ids=[image_id(4), image_id(1)], labels=2)
    assert set(fs.column("image_id", some)) <= {image_id(1), image_id(4)}
    assert len(fs.select(split="nope")) == 0 and len(fs.select()) == len(fs)


def test_read_rows_and_materialize_in_manifest_order(store: FeatureStore) -> None:
    fs = write_set(store, 15)
    whole = np.concatenate([expected(i, "c5") for i in range(15)])
    assert np.array_equal(fs.materialize(layer="c5"), whole)
    rows = np.random.default_rng(3).integers(0, len(fs), 300)  # any order, repeats
    assert np.array_equal(fs.read_rows(rows, "c5"), whole[rows])
    sel = fs.select(labels=0)
    got = fs.materialize(sel, "c5")
    assert (
        got.flags.c_contiguous and got.dtype == np.float16 and np.array_equal(got, whole[sel.rows])
    )
    with pytest.raises(FeatureStoreError, match="out of range"):
        fs.read_rows([len(fs)])
    with pytest.raises(IncompatibleFeatureSet, match="selection"):
        write_set(store, 3, mode="other").materialize(sel)


@pytest.mark.parametrize(("dim", "contiguous"), [(256, True), (200, False)])
def test_gathers_of_large_values(store: FeatureStore, dim: int, contiguous: bool) -> None:
    """Values on overflow pages: rows of 512 bytes share one phase (a plain 2-D gather); rows
    of 400 bytes do not (a gather over overlapping 8-byte words)."""
    rng = np.random.default_rng(7)
    inputs = make_inputs(layers=["fc7"])
    truth = [rng.standard_normal((20 + i, dim)).astype(np.float16) for i in range(6)]
    with store.writer(inputs, {"fc7": dim}) as w:
        for i, feats in enumerate(truth):
            n = len(feats)
            w.put(
                image_id(i),
                {"fc7": feats},
                {"boxes": np.zeros((n, 4)), "scale": 1, "label": np.zeros(n, int), "split": "t"},
            )
        fs = w.commit()
    assert fs._index("fc7").row_view.flags.c_contiguous == contiguous
    rows = rng.integers(0, len(fs), 500)
    assert np.array_equal(fs.read_rows(rows), np.concatenate(truth)[rows])
    assert np.array_equal(fs.get(image_id(3)), truth[3]) and fs.verify() == []


def test_materialize_cache_is_written_once_and_reused(
    store: FeatureStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs = write_set(store, 10)
    sel = fs.select(split="train")
    first = fs.materialize(sel, cache=tmp_path / "cache")
    [path] = (tmp_path / "cache").iterdir()
    assert isinstance(first, np.memmap) and np.array_equal(first, fs.materialize(sel))
    stamp = path.stat().st_mtime_ns, path.stat().st_ino

    def no_reads(*args, **kwargs):
        raise AssertionError("the cache should have been reused")

    monkeypatch.setattr(FeatureSet, "read_rows", no_reads)
    second = store.open(fs.id).materialize(sel, cache=tmp_path / "cache")
    assert (path.stat().st_mtime_ns, path.stat().st_ino) == stamp
    assert second.tobytes() == first.tobytes()
    monkeypatch.undo()
    other = fs.materialize(fs.select(split="val"), cache=tmp_path / "cache")
    assert len(list((tmp_path / "cache").iterdir())) == 2 and len(other) == len(
        fs.select(split="val")
    )


# -- processes -------------------------------------------------------------------------------


def test_readers_in_forked_and_spawned_processes_while_a_writer_commits(
    store: FeatureStore,
) -> None:
    ready = write_set(store, 6)
    pending_id = feature_set_id(make_inputs(trunk_digest="sha256:other"))
    (store.root / ".readers").mkdir()
    procs = []
    for method in ("fork", "fork", "spawn", "spawn"):
        args = (str(store.root), ready.id, pending_id, 6, 30, 60.0)
        p = mp.get_context(method).Process(target=reader_worker, args=args)
        p.start()
        procs.append(p)
    deadline = time.monotonic() + 60
    while len(list((store.root / ".readers").iterdir())) < 4:  # every reader is busy
        assert time.monotonic() < deadline and all(p.exitcode is None for p in procs)
        time.sleep(0.02)
    with store.writer(make_inputs(trunk_digest="sha256:other"), DIMS) as w:
        for i in range(30):
            w.put(*image_item(i, seed=1))
        w.commit()
    for p in procs:
        p.join(90)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]


def _child_reads(fs: FeatureSet, parent_env: lmdb.Environment, early: np.ndarray | None) -> None:
    got = fs.get(image_id(2), "fc7")
    reopened = fs._proc.env is not parent_env
    assert fs._proc.pid == os.getpid() and reopened == (early is None)
    assert np.array_equal(got, expected(2, "fc7"))
    assert fs.read_rows(np.arange(len(fs)), "c5").shape == (len(fs), DIMS["c5"])
    if early is not None:  # a view made before the fork: the inherited map stays open for it
        assert np.array_equal(early, expected(1, "fc7"))


def _run_forked(*args: object) -> int:
    p = mp.get_context("fork").Process(target=_child_reads, args=args)
    p.start()
    p.join(60)
    return p.exitcode


def test_a_set_reopens_after_fork_and_pickles_for_spawn(store: FeatureStore) -> None:
    fs = write_set(store, 4)
    assert fs.read_rows([0, 1], "fc7").shape == (2, DIMS["fc7"])  # the parent's environment is open
    env = fs._proc.env  # (not inside the assert: pytest would keep fs._proc alive in the child)
    assert _run_forked(fs, env, None) == 0
    early = fs.get(image_id(1), "fc7")
    assert _run_forked(fs, env, early) == 0
    clone = pickle.loads(pickle.dumps(fs))
    assert clone._proc is None and np.array_equal(clone.get(image_id(3)), expected(3, "fc7"))
    assert np.array_equal(early, expected(1, "fc7"))


def test_views_keep_the_map_alive(store: FeatureStore) -> None:
    fs = write_set(store, 2)
    view = store.open(fs.id).get(image_id(1), "c5")  # its FeatureSet is garbage at once
    fs.close()
    assert np.array_equal(view, expected(1, "c5"))


# -- catalog -------------------------------------------------------------------------------


def test_list_reports_complete_and_partial_sets(store: FeatureStore) -> None:
    fs = write_set(store, 3)
    w = store.writer(make_inputs(mode="full"), DIMS)
    w.put(*image_item(0))
    w.abort()
    entries = {e.id: e for e in store.list()}
    done, partial = entries[fs.id], entries[feature_set_id(make_inputs(mode="full"))]
    assert done.complete and done.images == 3 and done.layers == DIMS and done.size_bytes > 0
    assert done.lineage["trunk_run"] == "run-trunk" and done.lineage["run_id"] == "run-extract"
    assert done.lineage["dataset_digest"] == "sha256:tinyvoc0"
    assert not partial.complete and partial.writer_pid is None
    assert json.loads(json.dumps(done.to_dict()))["id"] == fs.id
    assert store.resolve(fs.id[:6]) == fs.id


def test_gc_removes_partial_and_unreferenced_sets(store: FeatureStore) -> None:
    keep = write_set(store, 2)
    drop = write_set(store, 2, mode="dropme")
    abandoned = store.writer(make_inputs(mode="abandoned"), DIMS)
    abandoned.put(*image_item(0))
    abandoned.abort()
    live = store.writer(make_inputs(mode="live"), DIMS)
    tmp_abandoned, tmp_live = abandoned.tmp, live.tmp
    assert store.gc(dry_run=True) == [tmp_abandoned] and tmp_abandoned.exists()
    assert store.gc() == [tmp_abandoned]
    assert not tmp_abandoned.exists() and tmp_live.exists()
    assert store.exists(keep.id) and store.exists(drop.id)  # no keep list: complete sets stay
    assert store.gc(keep=[keep.id[:8], "feedfacefeedface"], dry_run=True) == [drop.path]
    assert store.gc(keep=[keep.id]) == [drop.path]
    assert store.exists(keep.id) and not store.exists(drop.id) and tmp_live.exists()
    assert np.array_equal(keep.get(image_id(1)), expected(1, "fc7"))
    live.put(*image_item(0))
    assert live.commit().verify() == []


def test_a_set_written_again_at_the_same_path_is_read_afresh(store: FeatureStore) -> None:
    old = write_set(store, 3)
    old_view = old.get(image_id(0))  # keeps the old environment open in this process
    store.gc(keep=[])
    new = write_set(store, 3, seed=5)
    assert new.id == old.id
    assert np.array_equal(store.open(new.id).get(image_id(0)), expected(0, "fc7", seed=5))
    assert np.array_equal(old_view, expected(0, "fc7"))


_SIZE_LIMITED_WRITER = textwrap.dedent(
    """
    import resource, signal, sys
    sys.path.insert(0, sys.argv[2])
    from featurestore import FeatureStore, WriteFailed
    from featurestore_fixture import DIMS, image_item, make_inputs

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[4]),) * 2)

    with FeatureStore(sys.argv[1]).writer(make_inputs(), DIMS, meta={"trunk_run": "run-trunk"}) as w:
        try:
            if sys.argv[3] == "put":
                limit_file_size()
            for i in range(40):
                w.put(*image_item(i))
            if sys.argv[3] == "commit":
                limit_file_size()
            w.commit(run_id="run-extract")
        except WriteFailed as e:
            print(e)
            sys.exit(3)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize(("phase", "limit"), [("put", 40 << 10), ("commit", 2 << 10)])
def test_a_refused_write_publishes_nothing_and_a_rerun_resumes(
    tmp_path: Path, store: FeatureStore, phase: str, limit: int
) -> None:
    # A real EFBIG from the kernel (RLIMIT_FSIZE), as a full disk's ENOSPC, without root: in
    # put (data.mdb cannot grow) or in commit (the manifest cannot be written).
    proc = subprocess.run(
        [sys.executable, "-c", _SIZE_LIMITED_WRITER, str(store.root), str(Path(__file__).parent), phase, str(limit)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    fid = feature_set_id(make_inputs())
    assert proc.returncode == 3, proc.stderr
    message = proc.stdout
    assert f"feature set {fid}: writing {store.root / f'.tmp-{fid}'} failed" in message
    assert "nothing was published" in message and f"files over {limit} bytes" in message
    assert not store.exists(fid) and not (store.root / fid).exists()
    [entry] = store.list()
    assert not entry.complete
    w = store.writer(make_inputs(), DIMS, meta={"trunk_run": "run-trunk"})
    done = w.done()
    assert (len(done) < 40) == (phase == "put") and done == {image_id(i) for i in range(len(done))}
    for i in range(len(done), 40):
        w.put(*image_item(i))
    resumed = w.commit(run_id="run-extract")
    assert resumed.verify() == []
    _assert_same_sets(resumed, write_set(FeatureStore(tmp_path / "clean"), 40))
