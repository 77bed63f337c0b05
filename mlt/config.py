"""Typed run configuration: one schema for every stage, loaded from YAML with overrides.

A run config is a YAML file whose top-level sections are the stages (``data``, ``windows``,
``pretrain``, ``extract``, ``head``, ``sweep``, ``eval``, ``tracking``). Every field has a
default documented here, once; unknown keys are errors. On the command line, ``key=value``
overrides (``pretrain.lr=0.02``, ``windows.scales=[1,2,4]``) are parsed as YAML scalars/lists
and applied before validation, so a bad override is reported like a bad file entry: the field,
the value and what was expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mlt.errors import InputError

#: Where ``../shared/data`` sits relative to the project root; ``MLT_DATA`` overrides it.
DEFAULT_DATA_ROOT = Path("../shared/data")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class SubsetConfig(_Section):
    """Which source classes to pretrain on (see ``mlt.data.subsets``)."""

    kind: Literal["all", "random", "related", "unrelated", "list"] = "all"
    n: int | None = Field(None, ge=1, description="class count for random/related/unrelated")
    classes: list[str] = Field(default_factory=list, description="explicit wnids for kind=list")
    exclude: list[str] = Field(default_factory=list, description="wnids never drawn")
    seed: int = 0
    images_per_class: int | None = Field(None, ge=1, description="equal image count per class")


class DataConfig(_Section):
    """Where the source and target sets are, and how bad items are handled."""

    source: Path = DEFAULT_DATA_ROOT / "tiny-imagenet-200"
    target: Path = DEFAULT_DATA_ROOT / "tinyvoc" / "TinyVOC"
    label_map: Path = Path("configs/labelmaps/tinyvoc.yaml")
    train_split: str = "trainval"
    test_split: str = "test"
    subset: SubsetConfig = Field(default_factory=SubsetConfig)
    skip_bad: bool = False
    target_limit: int | None = Field(
        None, ge=1, description="first N images of each target split list (demos, smoke runs)"
    )


class WindowsConfig(_Section):
    """The paper's multi-scale square window grid and its labelling rule."""

    scales: list[float] = Field(
        default_factory=lambda: [1.0, 1.3, 1.6, 2.0, 2.4, 2.8, 3.2, 3.6, 4.0]
    )
    stride_fraction: float = Field(1 / 3, gt=0, le=1)
    window_fraction: float = Field(0.2, ge=0, le=1, description="|P∩B| ≥ this × |P|")
    box_fraction: float = Field(0.6, ge=0, le=1, description="|P∩B| ≥ this × |B|")
    background_fraction: float = Field(0.1, ge=0, le=1, description="background kept for training")
    seed: int = 0
    grid: Literal["paper", "boxed"] = Field(
        "paper",
        description="paper: the multi-scale grid above; boxed: one square window (side max(w, h))"
        " centred on each non-difficult object box, labelled with its class, mirror-padded"
        " past the image (the paper's action protocol; extract.mode=crop only)",
    )

    @field_validator("scales")
    @classmethod
    def _scales_valid(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("at least one scale")
        if any(s < 1 for s in v):
            raise ValueError("every scale λ ≥ 1 (window side = min(w, h) / λ)")
        return v


class PretrainConfig(_Section):
    """Trunk pretraining on the source set (Ray Train DDP)."""

    model: str = "alexnet-small"
    input_size: int = Field(64, ge=16)
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(128, ge=1, description="per worker")
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["plateau", "cosine"] = "plateau"
    plateau_patience: int = Field(2, ge=0, description="epochs without improvement before ÷10")
    lr_drops: int = Field(
        3, ge=0, description="at most this many ÷10 steps (the paper: three stages)"
    )
    workers: int = Field(1, ge=1)
    use_gpu: bool = False
    loader: Literal["dali", "reference"] = "dali"
    loader_workers: int = Field(2, ge=0, description="decode threads (DALI) or DataLoader workers")
    crop_area_min: float = Field(
        0.08, gt=0, le=1, description="random resized crop: smallest area fraction"
    )
    max_failures: int = Field(3, ge=0, description="worker restarts from the last checkpoint")
    max_train_images: int | None = Field(None, ge=1, description="cap per epoch (smoke runs)")
    seed: int = 0


class ExtractConfig(_Section):
    """Window feature extraction into the feature store."""

    layers: list[Literal["fc7", "fc6", "c5"]] = Field(default_factory=lambda: ["fc7"])
    mode: Literal["crop", "conv"] = "crop"
    conv_passes: int = Field(
        1, ge=1, description="conv mode: convolutional passes per image (groups of scales)"
    )
    backend: Literal["auto", "dali", "reference"] = Field(
        "auto", description="auto: DALI on a GPU, the reference cropper on CPU (faster there)"
    )
    batch_size: int = Field(256, ge=1)
    workers: int = Field(1, ge=1)
    chunk_images: int = Field(4, ge=1, description="images per task sent to an actor")
    store: Path = Path("runs/features")


class HeadConfig(_Section):
    """FCa/FCb heads trained on cached features."""

    def digest_fields(self) -> dict:
        """Returns the settings that stage digests hash: every field, less those left None, so a
        field added later with a None default leaves the digests of earlier runs as they were."""
        return self.model_dump(mode="json", exclude_none=True)

    fca_width: int = Field(2048, ge=1)
    dropout: float = Field(0.5, ge=0, lt=1)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD only")
    weight_decay: float = Field(1e-4, ge=0)
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(256, ge=1)
    background_fraction: float = Field(
        0.1, ge=0, le=1, description="share of background windows drawn for training (paper: 10%)"
    )
    resample_background: bool = Field(True, description="redraw the background share each epoch")
    patience: int = Field(5, ge=1, description="early stopping on validation mAP")
    train_split: str = Field("train", description="images the head learns from")
    train_images: int | None = Field(
        None, ge=1, description="learn from only the first N images of train_split (a small"
        " target set); None: all of them",
    )  # fmt: skip
    val_split: str = Field("val", description="images for early stopping and every choice")
    unfreeze: Literal["none", "fc6", "fc6+fc7"] = Field(
        "none",
        description="trunk layers trained with FCa/FCb from cached c5 features (train-head"
        " --layer c5; the paper's PRE-1512U retrains fc6); none: FCa/FCb only",
    )
    seed: int = 0


class SweepConfig(_Section):
    """Ray Tune sweep over head configurations."""

    space: Path = Path("configs/sweeps/heads.yaml")
    search: Literal["grid", "random"] = "grid"
    num_samples: int = Field(16, ge=1)
    scheduler: Literal["asha", "fifo"] = "asha"
    batched: bool = True


class EvalConfig(_Section):
    """Image scores by the power mean over windows and VOC average precision."""

    k: float | Literal["max"] = 5.0
    ap: Literal["voc07", "area"] = "voc07"

    @field_validator("k")
    @classmethod
    def _k_positive(cls, v: float | str) -> float | str:
        if v != "max" and v <= 0:
            raise ValueError("k > 0 or 'max'")
        return v


class TrackingConfig(_Section):
    """MLflow tracking; ``uri`` None means SQLite in the run folder (or MLFLOW_TRACKING_URI)."""

    uri: str | None = None
    experiment: str = "mlt"


class RunConfig(_Section):
    """The whole run: every stage's section, a name and the run folder."""

    name: str = "mlt"
    run_dir: Path = Path("runs")
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    windows: WindowsConfig = Field(default_factory=WindowsConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    extract: ExtractConfig = Field(default_factory=ExtractConfig)
    head: HeadConfig = Field(default_factory=HeadConfig)
    sweep: SweepConfig = Field(default_factory=SweepConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Returns (dotted key path, YAML-parsed value) of one ``key.sub=value`` override."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise InputError(
            "<command line>", "override", text, "KEY=VALUE with a dotted key, e.g. pretrain.lr=0.02"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise InputError("<command line>", key, raw, f"a YAML value ({e.problem})") from None
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Returns a copy of the nested mapping ``data`` with the ``key=value`` overrides applied."""
    out = _deepcopy_dict(data)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise InputError(
                    "<command line>", ".".join(path[: i + 1]), child, "a section, not a value"
                )
            node = child
        node[path[-1]] = value
    return out


def _deepcopy_dict(d: dict) -> dict:
    return {k: _deepcopy_dict(v) if isinstance(v, dict) else v for k, v in d.items()}


def _expected(err: dict) -> str:
    """Returns a readable 'what was expected' from one pydantic error entry."""
    kind = err["type"]
    if kind == "extra_forbidden":
        return "no such key (unknown keys are errors; see `mlt config show` for the schema)"
    if kind == "literal_error":
        return "one of " + err["ctx"]["expected"]
    return err["msg"][0].lower() + err["msg"][1:]


def validation_error(source: str, exc: ValidationError) -> InputError:
    """Returns an InputError listing every field error of ``exc`` (field, value, expectation)."""
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"])
        lines.append(f"field '{field}': got {err['input']!r}; expected {_expected(err)}")
    first = exc.errors()[0]
    error = InputError(
        source,
        ".".join(str(p) for p in first["loc"]),
        first["input"],
        _expected(first),
        kind="invalid config",
    )
    if len(lines) > 1:
        error.args = (f"{source}: invalid config ({len(lines)} errors):\n  " + "\n  ".join(lines),)
    return error


def load_yaml_mapping(path: Path) -> dict:
    """Returns the top-level mapping of a YAML file (empty file → {}); errors name the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise InputError(path, None, str(path), f"a readable config file ({e.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else None
        raise InputError(path, where, getattr(e, "problem", str(e)), "valid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(path, None, type(data).__name__, "a mapping of sections at top level")
    return data


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> RunConfig:
    """Returns the validated RunConfig from a YAML file (or the defaults) plus overrides."""
    source = str(path) if path is not None else "<defaults>"
    data = load_yaml_mapping(Path(path)) if path is not None else {}
    data = apply_overrides(data, list(overrides))
    if overrides:
        source += " + command-line overrides"
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise validation_error(source, e) from None


def config_to_yaml(config: BaseModel) -> str:
    """Returns the config as YAML text that load_config reads back to an equal config."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
