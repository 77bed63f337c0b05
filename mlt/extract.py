"""Window feature extraction: the frozen trunk's activations for every window of every image.

For each image of the target set (train and test splits) the paper's window grid is built and
labelled, and the trunk's activations (``fc7``, optionally ``c5``/``fc6``) for every window go
into a feature set of the LMDB store. Two modes:

- ``crop``: each window is cut out and resized to the trunk's input (the paper's way);
- ``conv``: C1..C5 run once per image scale (the image resized so that a window of that scale
  spans the trunk's input), and each window's part of the C5 map is ROI-pooled to the trunk's
  C5 grid before FC6/FC7 — the paper's suggested fully convolutional evaluation.

With ``windows.grid=boxed`` each non-difficult object box gives one square window
(:mod:`mlt.windows_boxed`); windows past the image are cut from the image mirrored at its
borders (crop mode only; either backend crops the padded array).

``Featurizer`` is the per-process worker (pure torch); ``run_extract`` drives Ray actors over
image shards, writes through one ``FeatureSetWriter`` (resuming image by image) and records
an MLflow run with lineage tags.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from featurestore import FeatureStore, feature_set_id
from mlt.checkpoint import state_dict_digest
from mlt.config import RunConfig, WindowsConfig
from mlt.data.voc import VocAnnotation, VocDataset
from mlt.decode import decode_image, make_window_cropper
from mlt.errors import InputError
from mlt.memory import PeakSampler, memory_metrics, peak_rss_bytes, reset_peak
from mlt.windows import label_windows, window_grid

log = logging.getLogger(__name__)

EXTRACTOR_VERSION = "1"
#: Reliability tests set this to "<chunk number>:<marker file>" to SIGKILL an actor once.
FAULT_ENV = "MLT_FAULT_KILL_EXTRACT"
MODES = ("crop", "conv")
_BOXED_CROP_ONLY = (
    "crop with windows.grid=boxed (boxed windows leave the image and are cut from its mirror"
    " image, which conv mode's feature map does not have)"
)


@dataclass(frozen=True)
class ImageItem:
    """One image to extract: id, split, file and its labelled windows."""

    image_id: str
    split: str
    path: str
    boxes: np.ndarray  # (n, 4) float32
    scale: np.ndarray  # (n,) float32: the λ of each window
    label: np.ndarray  # (n,) int16

    def manifest_columns(self) -> dict[str, Any]:
        """Returns the manifest columns of this image's windows."""
        return {"boxes": self.boxes, "scale": self.scale, "label": self.label, "split": self.split}


def image_windows(
    ann: VocAnnotation, classes: Sequence[str], wc: WindowsConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns (boxes, λ per window, labels) of the image's windows under ``wc``.

    ``wc.grid="boxed"``: one square per non-difficult object (:mod:`mlt.windows_boxed`), its
    λ = min(w, h) / side, its label the object's class.
    """
    if wc.grid == "boxed":
        from mlt.windows_boxed import boxed_windows, window_scales

        boxes, labels = boxed_windows(ann, classes)
        scales = window_scales(boxes, ann.width, ann.height)
        return boxes.astype(np.float32), scales, labels.astype(np.int16)
    grid = window_grid(ann.width, ann.height, tuple(wc.scales), wc.stride_fraction)
    labels = label_windows(
        grid.boxes, ann.boxes(), ann.class_indices(classes), len(classes), difficult=ann.difficult(),
        window_fraction=wc.window_fraction, box_fraction=wc.box_fraction,
    )  # fmt: skip
    scales = np.asarray(grid.scales, dtype=np.float32)[grid.scale_index]
    return grid.boxes.astype(np.float32), scales, labels.astype(np.int16)


def dataset_items(
    ds: VocDataset, splits: Sequence[str], wc: WindowsConfig
) -> tuple[list[ImageItem], str]:
    """Returns the images of ``splits`` with their windows, and the dataset manifest digest.

    The digest covers every (split, image id, annotation bytes) and the class list, so a
    changed annotation or split gives a different feature-set id. Images without windows (in
    the boxed grid: no non-difficult object) are left out of the items.
    """
    items: list[ImageItem] = []
    h = hashlib.sha256(("\t".join(ds.classes) + "\n").encode())
    seen: set[str] = set()
    for split in splits:
        for ann in ds.iter_annotations(split):
            if ann.image_id in seen:
                continue
            seen.add(ann.image_id)
            xml = ds.annotation_path(ann.image_id).read_bytes()
            h.update(f"{split}\t{ann.image_id}\t{hashlib.sha256(xml).hexdigest()}\n".encode())
            boxes, scales, labels = image_windows(ann, ds.classes, wc)
            if not len(boxes):
                continue
            path = str(ds.image_path(ann.image_id, ann.filename))
            items.append(ImageItem(ann.image_id, split, path, boxes, scales, labels))
    return items, h.hexdigest()[:32]


class Featurizer:
    """Computes a trunk's activations for an image's windows (one per process; holds the trunk)."""

    def __init__(self, model: torch.nn.Module, layers: Sequence[str], mode: str = "crop",
                 backend: str = "reference", batch_size: int = 256, device: str = "cpu",
                 conv_passes: int = 1, mirror: bool = False) -> None:  # fmt: skip
        if mode not in MODES:
            raise InputError(None, "extract.mode", mode, f"one of {MODES}")
        if mirror and mode != "crop":
            raise InputError(None, "extract.mode", mode, _BOXED_CROP_ONLY)
        # mirror: windows past the image are cut from the image mirrored at its borders.
        self.mirror = mirror
        self.model = model.eval().to(device)
        self.layers = tuple(layers)
        self.mode = mode
        self.conv_passes = conv_passes
        self.batch_size = batch_size
        self.device = torch.device("cuda" if device == "gpu" else device)
        self.cropper = make_window_cropper(
            backend, out_size=model.input_size, mean=model.mean, std=model.std,
            device="gpu" if self.device.type == "cuda" else "cpu",
        )  # fmt: skip

    @torch.inference_mode()
    def __call__(self, path: str, boxes: np.ndarray, scale: np.ndarray) -> dict[str, np.ndarray]:
        """Returns {layer: (n, dim) float16} activations of the image's windows."""
        if self.mode == "crop":
            return self._crop_mode(path, boxes)
        return self._conv_mode(path, boxes, scale)

    def _forward(self, crops: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        out: dict[str, list[torch.Tensor]] = {layer: [] for layer in self.layers}
        for i in range(0, len(crops), self.batch_size):
            acts = self.model.forward_features(
                crops[i : i + self.batch_size].to(self.device), self.layers
            )
            for layer in self.layers:
                out[layer].append(acts[layer].flatten(1))
        return out

    def _crop_mode(self, path: str, boxes: np.ndarray) -> dict[str, np.ndarray]:
        source = path
        if self.mirror:
            # Decoded here (the reference decoder, the same pixels as DALI's CPU decoder) and
            # padded; either cropper then cuts the padded array exactly as it cuts a file.
            from mlt.windows_boxed import mirror_pad

            source, boxes = mirror_pad(decode_image(path), boxes)
        crops = self.cropper.crop(source, boxes)
        out = self._forward(crops)
        return {layer: torch.cat(v).to(torch.float16).cpu().numpy() for layer, v in out.items()}

    def _conv_mode(self, path: str, boxes: np.ndarray, scale: np.ndarray) -> dict[str, np.ndarray]:
        from mlt.models.roi_pool import roi_pool, window_rois

        image = torch.from_numpy(decode_image(path)).permute(2, 0, 1).float().div_(255)
        mean = torch.tensor(self.model.mean).view(3, 1, 1)
        std = torch.tensor(self.model.std).view(3, 1, 1)
        image = ((image - mean) / std).unsqueeze(0).to(self.device)
        h, w = image.shape[-2:]
        geometry = self.model.stride_and_offset()
        grid = self.model.spec.grid
        n = len(boxes)
        result = {layer: None for layer in self.layers}
        for group in np.array_split(np.unique(scale), min(self.conv_passes, len(np.unique(scale)))):
            # One convolutional pass per group of scales, at the resolution where the group's
            # smallest windows span the trunk's input; larger windows pool more cells.
            idx = np.nonzero(np.isin(scale, group))[0]
            side = min(w, h) / float(group.max())
            factor = self.model.input_size / side
            size = (max(1, round(h * factor)), max(1, round(w * factor)))
            resized = F.interpolate(
                image, size=size, mode="bilinear", antialias=True, align_corners=False
            )
            cmap = self.model.conv_features(resized)
            rois = window_rois(
                torch.from_numpy(boxes[idx]),
                geometry,
                scale=factor,
                map_size=tuple(cmap.shape[-2:]),
            )
            pooled = roi_pool(cmap, rois.to(self.device), grid, spatial_scale=1.0, sampling="avg")
            acts = self.model.head_from_pooled_c5(pooled, self.layers)
            for layer in self.layers:
                a = acts[layer].flatten(1).to(torch.float16).cpu().numpy()
                if result[layer] is None:
                    result[layer] = np.empty((n, a.shape[1]), dtype=np.float16)
                result[layer][idx] = a
        return result


@dataclass
class Trunk:
    """A frozen trunk with where it came from."""

    model: torch.nn.Module
    name: str
    digest: str
    run_id: str | None
    source: str


def load_trunk(ref: str) -> Trunk:
    """Returns the trunk named by ``ref``: a local checkpoint file, an MLflow run id, or a
    ``runs:/…``/``models:/…`` URI (the trunk logged by ``mlt pretrain``)."""
    path = Path(ref)
    if path.is_file():
        from mlt.checkpoint import load_model_state, read_checkpoint
        from mlt.models import create_model

        state = read_checkpoint(path)
        if "model" not in state or "model_name" not in state:
            raise InputError(
                path,
                "model_name",
                sorted(state)[:8],
                "an mlt trunk checkpoint (model, model_name, classes)",
            )
        model = create_model(
            state["model_name"], num_classes=len(state.get("classes") or []) or 1000
        )
        load_model_state(model, state["model"], path)
        return Trunk(model.eval(), state["model_name"], state_dict_digest(model), None, str(path))
    import mlflow.pytorch

    uri = ref if ref.startswith(("runs:/", "models:/")) else f"runs:/{ref}/trunk"
    try:
        model = mlflow.pytorch.load_model(uri, map_location="cpu")
    except Exception as e:  # mlflow raises several types for a missing run/model
        raise InputError(
            None, "--trunk", ref, f"a trunk checkpoint file, MLflow run id or model URI ({e})"
        ) from None
    run_id = ref if not ref.startswith("models:/") else None
    if ref.startswith("runs:/"):
        run_id = ref.split("/")[1]
    return Trunk(model.eval(), type(model).__name__, state_dict_digest(model), run_id, uri)


def feature_inputs(
    trunk: Trunk,
    layers: Sequence[str],
    wc: WindowsConfig,
    mode: str,
    backend: str,
    dataset_digest: str,
    conv_passes: int = 1,
) -> dict:
    """Returns the inputs that determine a feature set (its id is their hash)."""
    m = trunk.model
    extra = {"conv_passes": conv_passes} if mode == "conv" else {}
    grid = {
        "scales": list(wc.scales),
        "stride_fraction": wc.stride_fraction,
        "window_fraction": wc.window_fraction,
        "box_fraction": wc.box_fraction,
    }  # fmt: skip
    if wc.grid == "boxed":  # the grid's parameters do not touch boxed windows
        grid = {"kind": wc.grid}
    return {
        **extra,
        "trunk_digest": trunk.digest,
        "layers": list(layers),
        "grid": grid,
        "preprocessing": {
            "input_size": m.input_size,
            "mean": list(m.mean),
            "std": list(m.std),
            "backend": backend,
        },
        "mode": mode,
        "dataset_digest": dataset_digest,
        "extractor_version": EXTRACTOR_VERSION,
    }


def resolve_backend(backend: str, gpu: bool) -> str:
    """Returns the crop backend to use: ``auto`` is DALI with a GPU, the reference on CPU."""
    if backend != "auto":
        return backend
    return "dali" if gpu else "reference"


def _chunks(items: Sequence[ImageItem], size: int) -> Iterable[list[ImageItem]]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


class _Worker:
    """Ray actor body: one Featurizer per process."""

    def __init__(
        self,
        model: torch.nn.Module,
        layers: Sequence[str],
        mode: str,
        backend: str,
        batch_size: int,
        threads: int,
        conv_passes: int,
        fault: str | None = None,
        mirror: bool = False,
    ) -> None:
        self.fault, self.chunks, self.memory = fault, 0, PeakSampler()
        torch.set_num_threads(max(1, threads))
        device = "gpu" if torch.cuda.is_available() else "cpu"
        self.featurizer = Featurizer(
            model, layers, mode, backend, batch_size, device, conv_passes, mirror
        )

    def run(self, chunk: list[ImageItem]) -> list[tuple[str, dict[str, np.ndarray]]]:
        self.chunks += 1
        if self.fault:  # reliability tests: "<chunk number>:<marker file>" SIGKILLs this actor once
            import os
            import signal

            n, marker = self.fault.split(":", 1)
            if self.chunks == int(n) and not Path(marker).exists():
                Path(marker).write_text(f"killed extraction actor {os.getpid()}\n")
                os.kill(os.getpid(), signal.SIGKILL)
        return [(it.image_id, self.featurizer(it.path, it.boxes, it.scale)) for it in chunk]

    def peaks(self) -> dict[str, int]:
        """Returns this actor process's peak memory in bytes: ``rss`` (VmHWM) and the sampled
        peak of each kind (``anon``, ``file``, ``shmem``; :class:`mlt.memory.PeakSampler`)."""
        return {"rss": peak_rss_bytes(), **self.memory.peaks()}


def _actor_peaks(actors: list) -> list[dict[str, int]]:
    """Returns the peak memory (:meth:`_Worker.peaks`) of each live actor; [] when they cannot answer."""
    import ray

    try:
        return ray.get([a.peaks.remote() for a in actors], timeout=30)
    except Exception:  # a dead or stuck actor: the figures are not worth failing the stage
        return []


def run_extract(
    config: RunConfig, trunk_ref: str, dataset_root: Path | None = None, progress: bool = True
) -> dict:
    """Extracts (or finds) the feature set of ``trunk_ref`` on the target set; returns a summary.

    Same inputs → same feature-set id → nothing is recomputed. An interrupted extraction resumes
    image by image. The work is spread over ``extract.workers`` Ray actors.
    """
    import ray
    from tqdm import tqdm

    from mlt import tracking
    from mlt.raysession import ensure_ray

    ec, wc = config.extract, config.windows
    if wc.grid == "boxed" and ec.mode != "crop":
        raise InputError(None, "extract.mode", ec.mode, _BOXED_CROP_ONLY)
    root = Path(dataset_root or config.data.target).resolve()  # actors run in other folders
    ds = VocDataset(root, limit=config.data.target_limit)
    tracking.setup_tracking(config)  # a trunk given as a run id lives in this tracking store
    trunk = load_trunk(trunk_ref)
    items, ds_digest = dataset_items(ds, [config.data.train_split, config.data.test_split], wc)
    ensure_ray()
    gpus = int(ray.cluster_resources().get("GPU", 0))
    backend = resolve_backend(ec.backend, gpus > 0)
    inputs = feature_inputs(trunk, ec.layers, wc, ec.mode, backend, ds_digest, ec.conv_passes)
    store = FeatureStore(Path(ec.store))
    set_id = feature_set_id(inputs)
    if store.exists(set_id):
        log.info("feature set %s exists: nothing to extract", set_id)
        return {"feature_set": set_id, "skipped": True, "path": str(store.path(set_id))}

    dims = {layer: trunk.model.feature_dims[layer] for layer in ec.layers}
    meta = {
        "trunk_run": trunk.run_id,
        "trunk_source": trunk.source,
        "dataset": str(root),
        "classes": list(ds.classes),
    }
    writer = store.writer(inputs, dims, meta)
    reset_peak()  # this stage's own peak, not the process's earlier work
    memory = PeakSampler()
    with tracking.run(config, f"extract-{set_id}", "extract") as active:
        tracking.log_config(config, sections=("windows", "extract"))
        tracking.set_tags({"mlt.featureset.id": set_id, "mlt.trunk.run": trunk.run_id, "mlt.trunk.digest": trunk.digest,
                           "mlt.dataset.digest": ds_digest, "mlt.extract.mode": ec.mode})  # fmt: skip
        tracking.log_dataset("target", ds_digest, root, "extraction")
        done = writer.done()
        todo = [it for it in items if it.image_id not in done]
        if done:
            print(
                f"resuming feature set {set_id}: {len(done)} of {len(items)} images already written",
                flush=True,
            )
        model_ref = ray.put(trunk.model)  # shipped once through the object store
        actor_cls = ray.remote(num_cpus=1, num_gpus=1 if gpus else 0)(_Worker)
        n_actors = min(ec.workers, gpus) if gpus else ec.workers  # one actor per GPU at most
        threads = max(1, int(ray.cluster_resources().get("CPU", 1)) // n_actors)
        actors = [
            actor_cls.remote(
                model_ref,
                ec.layers,
                ec.mode,
                backend,
                ec.batch_size,
                threads,
                ec.conv_passes,
                os.environ.get(FAULT_ENV),
                wc.grid == "boxed",
            )
            for _ in range(n_actors)
        ]
        by_id = {it.image_id: it for it in todo}
        start, windows_done = time.perf_counter(), 0
        bar = tqdm(total=len(todo), unit="img", desc=f"extract {set_id[:8]}", disable=not progress)
        try:
            pending: dict[Any, int] = {}
            chunks = iter(_chunks(todo, ec.chunk_images))
            for i, actor in enumerate(actors * 2):  # two chunks in flight per actor
                chunk = next(chunks, None)
                if chunk is not None:
                    pending[actor.run.remote(chunk)] = i % len(actors)
            while pending:
                ray.wait(list(pending), num_returns=1)
                # Take every finished chunk, successes first: a dead actor's error must not
                # cost the work other chunks already finished.
                ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
                failure = None
                for ref in ready:
                    a = pending.pop(ref)
                    try:
                        results = ray.get(ref)
                    except Exception as e:  # an actor died or raised: write the rest, then fail
                        failure = failure or e
                        continue
                    writer.put_many(
                        [(iid, feats, by_id[iid].manifest_columns()) for iid, feats in results]
                    )
                    windows_done += sum(len(by_id[iid].boxes) for iid, _ in results)
                    bar.update(len(results))
                    rate = windows_done / (time.perf_counter() - start)
                    bar.set_postfix(windows_per_s=f"{rate:.0f}")
                    chunk = next(chunks, None)
                    if chunk is not None and failure is None:
                        pending[actors[a].run.remote(chunk)] = a
                if failure is not None:
                    raise failure
        except BaseException:
            writer.abort()  # keep what was written: a rerun resumes from here
            raise
        finally:
            bar.close()
            peaks, driver_peaks = _actor_peaks(actors), memory.stop()
            for actor in actors:
                ray.kill(actor)
        seconds = time.perf_counter() - start
        fs = writer.commit(run_id=active.info.run_id)
        counts = fs.meta["counts"]
        tracking.log_metrics({"images": counts["images"], "windows": counts["windows"], "extract_seconds": seconds,
                            "windows_per_s": windows_done / seconds if seconds else 0.0,
                            "disk_bytes": fs.disk_bytes(),
                            **memory_metrics({"rss": peak_rss_bytes(), **driver_peaks}, peaks)})  # fmt: skip
        return {"feature_set": set_id, "skipped": False, "path": str(store.path(set_id)), "run_id": active.info.run_id,
                "images": counts["images"], "windows": counts["windows"], "seconds": seconds,
                "resumed_images": len(done)}  # fmt: skip
