"""``mlt experiment``: specs, the report's pieces, the scratch window set, and (slow) two
experiments end to end on generated data, then a rerun that trains nothing."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlt.config import config_to_yaml, load_config
from mlt.errors import InputError
from mlt.experiments.compare import verdict
from mlt.experiments.registry import module_name, ordered_names
from mlt.experiments.report import Section, assemble, duration, pct, table, write_section
from mlt.experiments.scratch import BACKGROUND, build_window_source, draw_windows
from mlt.experiments.spec import load_spec


def _spec(tmp_path, text: str):
    path = tmp_path / "x.yaml"
    path.write_text(text)
    return path


def test_every_committed_spec_loads_and_its_arms_validate() -> None:
    names = ordered_names()
    assert names[:2] == ["transfer", "source-classes"] and "cost" in names
    for name in names:
        spec = load_spec(name)
        __import__(module_name(spec.kind))
        for arm in spec.arms:
            spec.arm_config(arm)  # raises on a bad override
    sc = load_spec("source-classes")
    assert sc.arm_config("related100").data.subset.kind == "related"
    assert sc.arm_config("related100", ["head.lr=0.5"]).head.lr == 0.5


@pytest.mark.parametrize(
    "text, field",
    [
        ("title: t\nbase: configs/cpu.yaml\nextra: 1\n", "extra"),
        ("title: t\nbase: configs/cpu.yaml\nseeds: [0, -1]\n", "seeds"),
        ("title: t\nbase: configs/cpu.yaml\narms: {a: [1]}\n", "arms"),
        ("base: configs/cpu.yaml\n", "title"),
    ],
)
def test_a_bad_spec_names_its_file_and_field(tmp_path, text, field) -> None:
    path = _spec(tmp_path, text)
    with pytest.raises(InputError) as e:
        load_spec(str(path))
    assert str(path) in str(e.value) and field in str(e.value)


def test_unknown_experiment_and_arm_are_clear_errors(tmp_path) -> None:
    with pytest.raises(InputError, match="transfer"):
        load_spec("no-such-experiment")
    spec = load_spec(str(_spec(tmp_path, "title: t\nbase: configs/cpu.yaml\narms: {a: []}\n")))
    with pytest.raises(InputError, match="unknown arm"):
        spec.arm_config("b")
    with pytest.raises(InputError, match="pretrain.nope"):
        load_spec(
            str(_spec(tmp_path, "title: t\nbase: configs/cpu.yaml\ncommon: [pretrain.nope=1]\n"))
        ).arm_config("main")


def test_report_pieces() -> None:
    assert pct([0.5]) == "50.0" and pct([0.3, 0.5]) == "40.0 ± 14.1" and pct([np.nan]) == "n/a"
    assert (
        duration(42) == "42 s" and duration(185) == "3 min 5 s" and duration(4320) == "1 h 12 min"
    )
    assert table(["a", "b"], [[1, 2]]).splitlines() == ["| a | b |", "| :-- | --: |", "| 1 | 2 |"]


def test_verdict_compares_the_gap_with_head_seed_noise() -> None:
    d, se, word = verdict(np.array([0.60, 0.61, 0.62]), np.array([0.50, 0.51, 0.52]), +7.8)
    assert d == pytest.approx(10.0) and se == pytest.approx(100 * np.sqrt(2 * 1e-4 / 3))
    assert word == "reproduces the paper's direction"
    assert verdict(np.array([0.5, 0.6]), np.array([0.55, 0.5]), +1)[2] == "within head-seed noise"
    assert verdict(np.array([0.4, 0.41]), np.array([0.5, 0.51]), +1)[2].startswith("reversed")
    assert verdict(np.array([0.4, 0.41]), np.array([0.5, 0.51]), 0)[2] == "beyond head-seed noise"


def _arm(spec, arm: str, values: list[float]):
    from mlt.experiments.runner import ArmResult, HeadFigures

    heads = [HeadFigures(i, f"run{i}", {"test_mAP": v, "test_ap_bird": v - 0.1, "test_ap_cat": v + 0.1},
                         60.0) for i, v in enumerate(values)]  # fmt: skip
    return ArmResult(arm, spec.arm_config(arm), "a" * 32, "set1", heads,
                     trunk_info={"seconds": 600.0, "val_top1": 0.2},
                     extraction={"extract_seconds": 30.0})  # fmt: skip


def test_a_record_gives_back_the_arms_it_was_written_from(tmp_path) -> None:
    from mlt.experiments import record
    from mlt.experiments.compare import class_table, map_table
    from mlt.experiments.runner import stage_seconds

    spec = load_spec("source-classes")
    results = {
        "all200": _arm(spec, "all200", [0.3, 0.5]),
        "random100": _arm(spec, "random100", [0.2]),
    }
    path = record.write(tmp_path / "source-classes.json", "source-classes", results)
    arms = record.load(path)
    back = {a: record.arm_result(arms[a], a, spec.arm_config(a)) for a in results}
    assert back["all200"].source == "measured" and back["all200"].trunk_info["val_top1"] == 0.2
    classes = ["bird", "cat"]
    for render in (map_table, lambda r: class_table(r, classes)):
        assert render(back) == render(results)
    assert stage_seconds(back) == stage_seconds(results) == 600 + 30 + 3 * 60
    # another config (another arm's overrides) is not this arm's record; arms not rewritten stay
    assert record.arm_result(arms["all200"], "all200", spec.arm_config("random100")) is None
    record.write(path, "source-classes", {"random100": back["random100"]}, arms)
    assert set(record.load(path)) == {"all200", "random100"}
    path.write_text('{"arms": {"all200": {"trunk": "x"}}}')
    with pytest.raises(InputError, match="source-classes.json.*arms"):
        record.load(path)


def test_an_arm_recorded_as_a_summary_renders_like_its_seeds() -> None:
    from mlt.experiments.compare import class_table, map_table
    from mlt.experiments.report import Stats
    from mlt.experiments.runner import ArmResult

    spec = load_spec("source-classes")
    seeds = _arm(spec, "all200", [0.3, 0.5])
    s = {m: Stats.of(seeds.values(m)) for m in ("test_mAP", "test_ap_bird", "test_ap_cat")}
    summary = ArmResult("all200", seeds.config, "", None, summary=s, source="transcribed")
    assert summary.seeds == 2 and pct(summary.stats("test_mAP")) == "40.0 ± 14.1"
    assert pct(summary.stats("val_mAP")) == "n/a"
    assert map_table({"all200": summary}) == map_table({"all200": seeds})
    assert class_table({"a": summary}, ["bird", "cat"]) == class_table(
        {"a": seeds}, ["bird", "cat"]
    )
    other = _arm(spec, "random100", [0.2, 0.21])
    assert verdict(summary.stats("test_mAP"), other.stats("test_mAP"), +1) == verdict(
        seeds.values("test_mAP"), other.values("test_mAP"), +1
    )


def test_the_committed_source_classes_record_matches_the_spec() -> None:
    from mlt.experiments import record

    spec = load_spec("source-classes")
    arms = record.load(record.record_path(Path("docs/results"), "source-classes"))
    assert {"all200", "random100"} <= set(arms)
    for arm, entry in arms.items():
        r = record.arm_result(entry, arm, spec.arm_config(arm))
        assert r is not None and r.seeds == len(spec.seeds), arm
        assert 0 < r.stats("test_mAP").mean < 1


def test_assemble_orders_sections_and_rewrites_image_links(tmp_path) -> None:
    out = tmp_path / "sections"
    write_section(Section("cost", "Cost", "![p](./c.png)", "mlt experiment cost", 5.0, 60.0), out)
    write_section(Section("transfer", "Transfer", "body", "mlt experiment transfer", 1.0), out)
    text = assemble(out, tmp_path / "RESULTS.md", "# Results").read_text()
    assert text.index("## Transfer") < text.index("## Cost") and text.startswith("# Results")
    assert "](sections/c.png)" in text and "compute 1 min 0 s" in text


def test_a_report_run_with_overrides_says_so() -> None:
    from mlt.experiments.registry import INTRO, intro

    assert intro(()) == INTRO
    other = intro(("data.target=/data/OtherVOC",))
    assert other.startswith(INTRO) and "`data.target=/data/OtherVOC`" in other
    assert "discussions" in other


def test_draw_windows_caps_each_label_and_never_keeps_ignored() -> None:
    labels = np.array([0] * 10 + [1] * 3 + [2] * 50 + [-1] * 5)
    rows = draw_windows(labels, num_classes=2, per_class=4, seed=0)
    kept = labels[rows]
    assert np.bincount(kept, minlength=3).tolist() == [4, 3, 4] and (kept >= 0).all()
    assert np.array_equal(rows, draw_windows(labels, 2, 4, seed=0)) and np.all(np.diff(rows) > 0)


def test_scratch_window_set_is_an_imagefolder_of_train_and_val_windows(tmp_path) -> None:
    from mlt.data.source import read_source
    from mlt.data.synthetic import make_target

    target = make_target(tmp_path / "voc", 3, n_train=6, n_val=6, n_test=4)
    config = load_config(None, [f"data.target={target}", "pretrain.input_size=32"])
    out = build_window_source(
        config, tmp_path / "src", per_class=7, val_per_class=3, progress=False
    )
    train = read_source(out, "train")
    assert BACKGROUND in train.classes and 0 < len(train) <= 7 * len(train.classes)
    assert max(train.counts().values()) <= 7
    assert Image.open(train.samples[0].path).size == (32, 32)
    assert max(read_source(out, "val").counts().values()) <= 3
    stamp = os.stat(out / ".complete").st_mtime_ns
    build_window_source(config, out, per_class=7, val_per_class=3, progress=False)
    assert os.stat(out / ".complete").st_mtime_ns == stamp  # complete: reused, not rebuilt
    assert not list(tmp_path.glob(".tmp-*"))


def test_scratch_window_set_of_a_small_target_reads_only_its_first_train_images(tmp_path) -> None:
    from mlt.data.source import read_source
    from mlt.data.synthetic import make_target
    from mlt.data.voc import VocDataset

    target = make_target(tmp_path / "voc", 3, n_train=6, n_val=4, n_test=2)
    base = [f"data.target={target}", "pretrain.input_size=32"]
    whole = build_window_source(load_config(None, base), tmp_path / "src", 50, 50, progress=False)
    few = build_window_source(
        load_config(None, [*base, "head.train_images=2"]), tmp_path / "src", 50, 50, progress=False
    )
    # another recipe never overwrites a finished set: it goes beside it
    assert whole == tmp_path / "src" and few.parent == tmp_path and few.name.startswith("src-")
    assert "train_images" not in (whole / ".complete").read_text()

    def owners(folder, split):
        return {s.path.name.rsplit("_", 1)[0] for s in read_source(folder, split).samples}

    ids = VocDataset(target).ids
    assert owners(few, "train") == set(ids("train")[:2]) and len(owners(whole, "train")) > 2
    assert owners(few, "val") == set(ids("val"))
    assert "train_images=2" in (few / ".complete").read_text()


@pytest.mark.slow
def test_experiments_end_to_end_then_a_rerun_trains_nothing(ray_session, tmp_path) -> None:
    import mlflow

    from mlt.data.synthetic import make_demo_data
    from mlt.experiments.registry import run_experiment

    data = make_demo_data(tmp_path / "syn", source_images=(30, 10), target_images=(12, 12, 16))
    base = load_config("configs/demo.yaml", [
        f"run_dir={tmp_path / 'runs'}", f"extract.store={tmp_path / 'runs' / 'features'}",
        f"data.source={data['source']}", f"data.target={data['target']}", f"data.label_map={data['labelmap']}",
        "data.subset.kind=all", "data.subset.n=null", "data.subset.images_per_class=null",
        "data.target_limit=null", "pretrain.epochs=1", "extract.workers=1", "head.epochs=2",
    ])  # fmt: skip
    (tmp_path / "base.yaml").write_text(config_to_yaml(base))
    transfer = _spec(tmp_path, f"title: Transfer\nkind: transfer\nbase: {tmp_path / 'base.yaml'}\n"
                     f"seeds: [0, 1]\narms:\n  pretrained: []\n  scratch: [name=scratch, "
                     f"data.source={tmp_path / 'scratch-src'}]\noptions: {{per_class: 20, val_per_class: 5}}\n")  # fmt: skip
    agg = tmp_path / "agg.yaml"
    agg.write_text(f"title: Aggregation\nkind: aggregation\nbase: {tmp_path / 'base.yaml'}\n"
                   "seeds: [0, 1]\narms:\n  full: []\n  dense: [windows.stride_fraction=0.25]\n"
                   "options: {ks: [1, 5, max]}\n")  # fmt: skip
    out, results = tmp_path / "sections", tmp_path / "RESULTS.md"
    said: list[str] = []
    for spec in (transfer, agg):
        run_experiment(str(spec), out=out, results=results, progress=False, echo=said.append)
    text = results.read_text()
    assert "## Transfer" in text and "## Aggregation" in text
    assert (out / "transfer-classes.png").is_file() and (out / "aggregation-k.png").is_file()
    assert "| pretrained | 2 |" in text and "| scratch | 2 |" in text
    assert "(chosen on val)" in text and "| dense |" in text
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    heads = mlflow.search_runs(
        search_all_experiments=True, filter_string="tags.`mlt.stage` = 'head'"
    )
    assert len(heads) == 6  # 2 trunks x 2 seeds + the dense grid's 2 (full reuses pretrained's)
    assert heads["metrics.test_mAP"].notna().all()
    # the k curves are kept on the full grid's heads
    assert heads["metrics.val_mAP_kmax"].notna().sum() == 2
    n_runs = len(mlflow.search_runs(search_all_experiments=True))

    said.clear()
    for spec in (transfer, agg):
        run_experiment(str(spec), out=out, results=results, progress=False, echo=said.append)
    assert len(mlflow.search_runs(search_all_experiments=True)) == n_runs  # nothing retrained
    assert sum("found run" in line for line in said) == 8
    assert any(line.startswith("pretrain: skipped") for line in said)

    # --existing runs nothing: an arm not run yet is left out, an experiment without its main
    # arm says what is missing
    more = tmp_path / "more.yaml"
    more.write_text(
        agg.read_text().replace("  dense:", "  sparse: [windows.stride_fraction=0.5]\n  dense:")
    )
    run_experiment(
        str(more), out=out, results=results, progress=False, echo=said.append, existing=True
    )
    text = (out / "more.md").read_text()
    assert "| dense |" in text and "| sparse |" not in text
    other = tmp_path / "other.yaml"
    other.write_text(
        agg.read_text().replace("seeds: [0, 1]", "seeds: [0, 1]\ncommon: [head.epochs=3]")
    )
    run_experiment(
        str(other), out=out, results=results, progress=False, echo=said.append, existing=True
    )
    assert "Not measured yet" in (out / "other.md").read_text()
    assert len(mlflow.search_runs(search_all_experiments=True)) == n_runs

    # another checkout (an empty tracking store): the committed record renders the same tables,
    # and a section it cannot render is kept, not replaced by "Not measured yet"
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "base.yaml").write_text(
        (tmp_path / "base.yaml").read_text().replace(str(tmp_path / "runs"), str(fresh / "runs"))
    )
    (fresh / "x.yaml").write_text(
        transfer.read_text().replace(str(tmp_path / "base.yaml"), str(fresh / "base.yaml"))
    )
    (fresh / "agg.yaml").write_text(
        agg.read_text().replace(str(tmp_path / "base.yaml"), str(fresh / "base.yaml"))
    )
    before = (out / "x.md").read_text()
    (out / "agg.json").unlink()
    said.clear()
    for spec in (fresh / "x.yaml", fresh / "agg.yaml"):
        run_experiment(str(spec), out=out, results=results, progress=False, echo=said.append, existing=True)  # fmt: skip
    after = (out / "x.md").read_text()
    assert "figures read from the record `x.json`" in after
    table_of = lambda text: text[text.index("| arm | seeds |") : text.index("**Finding**")]  # noqa: E731
    assert table_of(after) == table_of(before) and "| pretrained | 2 |" in after
    assert "(chosen on val)" in (out / "agg.md").read_text()
    assert any(line.endswith("nothing measured here replaces them)") for line in said)
    assert not (fresh / "runs" / "features").exists()  # nothing was extracted or trained
