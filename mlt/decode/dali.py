"""The DALI backend: DALI decodes, crops, resizes, flips and normalises; Python plans.

Order, sharding and every crop/flip come from :mod:`mlt.decode.plan` (the same plans the
reference backend follows) and enter the pipeline through ``fn.external_source`` as per-sample
arguments, so ``set_epoch`` reshuffles exactly like the reference and both backends cut the same
pixels. The graph is the same for pretraining and windows::

    decoders.image -> slice(crop1) -> resize(size, float) [-> slice(crop2)] -> crop_mirror_normalize

``device="cpu"`` builds CPU-only pipelines (``device_id=None``, no CUDA needed); ``device="gpu"``
decodes with ``mixed`` (nvJPEG) on the current CUDA device and runs the rest on the GPU, with the
per-sample arguments staying on the CPU as DALI requires. DALI stops a pipeline for good after an
operator error; the loaders then drop it, find the culprit file with the strict reference decoder
and raise its :class:`~mlt.errors.InputError`. The next iteration builds a fresh pipeline.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from nvidia.dali import fn, types
from nvidia.dali.backend import TensorGPU
from nvidia.dali.pipeline import Pipeline
from nvidia.dali.plugin.pytorch import feed_ndarray

from mlt.decode.images import ImageSource, decode_image, header_size, load_encoded, read_image_bytes
from mlt.decode.plan import Normalization, Schedule, TransformSpec, window_crops
from mlt.decode.reference import torch_device
from mlt.errors import InputError


def _pipeline(batch_size: int, num_threads: int, device: str, prefetch: int) -> Pipeline:
    """Returns an empty pipeline: CPU-only (``device_id=None``) or on the current CUDA device."""
    device_id = torch.cuda.current_device() if device == "gpu" else None
    return Pipeline(batch_size=batch_size, num_threads=max(1, num_threads), device_id=device_id,
                    prefetch_queue_depth=prefetch)  # fmt: skip


def _geometry(
    images, *, start1, shape1, size, norm: Normalization, start2=None, shape2=None, mirror=None
):
    """Returns the DataNode of crop1 -> resize -> crop2 -> mirror -> normalise as NCHW float32."""
    x = fn.slice(images, start=start1, shape=shape1, axes=[0, 1])
    x = fn.resize(x, size=size, dtype=types.FLOAT, antialias=True, interp_type=types.INTERP_LINEAR)
    if start2 is not None:
        x = fn.slice(x, start=start2, shape=shape2, axes=[0, 1])
    return fn.crop_mirror_normalize(x, mirror=0 if mirror is None else mirror, mean=list(norm.mean255),
                                    std=list(norm.std255), output_layout="CHW", dtype=types.FLOAT)  # fmt: skip


_TORCH_DTYPES = {
    types.DALIDataType.FLOAT: torch.float32,
    types.DALIDataType.INT64: torch.int64,
    types.DALIDataType.UINT8: torch.uint8,
}


def _to_torch(tensor_list, device: torch.device, out: torch.Tensor | None = None) -> torch.Tensor:
    """Returns a torch copy of a dense DALI TensorList on ``device`` (written into ``out`` if given).

    ``out`` must be contiguous, of the list's dense shape, and on the memory DALI produced it in.
    """
    tensor = tensor_list.as_tensor()
    on_gpu = isinstance(tensor, TensorGPU)
    if out is None:
        out = torch.empty(
            tensor.shape(), dtype=_TORCH_DTYPES[tensor.dtype], device=device if on_gpu else "cpu"
        )
    feed_ndarray(tensor, out, cuda_stream=torch.cuda.current_stream(out.device) if on_gpu else None)
    return out if on_gpu else out.to(device)


def _culprit(sources: Sequence[ImageSource]) -> InputError | None:
    """Returns the InputError of the first source the strict reference decoder rejects, or None."""
    for source in sources:
        try:
            decode_image(source)
        except InputError as bad:
            return bad
    return None


def _encoded(source: ImageSource) -> np.ndarray:
    """Returns encoded bytes as a uint8 array once their header reads (InputError naming the file if not)."""
    data, name = load_encoded(source)
    header_size(data, name)
    return np.frombuffer(data, dtype=np.uint8)


class DaliLoader:
    """Pretraining loader on a DALI pipeline; iterating yields (images NCHW float32, labels int64)."""

    def __init__(
        self,
        files: Sequence[str],
        labels: Sequence[int],
        spec: TransformSpec,
        schedule: Schedule,
        *,
        device: str = "cpu",
        num_threads: int = 2,
        prefetch: int = 2,
    ) -> None:
        self.files = [str(f) for f in files]
        self.labels = np.asarray(labels, dtype=np.int64)
        self.spec = spec
        self.schedule = schedule
        self.device = device
        self.torch_device = torch_device(device)
        self.num_threads = num_threads
        self.prefetch = prefetch
        self.epoch = 0
        self._pipe: Pipeline | None = None
        self._feed: Iterator[np.ndarray] = iter(())
        self._feed_epoch = 0
        self._in_flight: deque[np.ndarray] = deque()
        self._closed = False

    def _build(self) -> Pipeline:
        pipe = _pipeline(self.schedule.batch_size, self.num_threads, self.device, self.prefetch)
        with pipe:
            encoded, label, start1, shape1, size, start2, shape2, mirror = fn.external_source(
                source=self._next_inputs, num_outputs=8, batch=True, parallel=False
            )
            images = fn.decoders.image(encoded, device="mixed" if self.device == "gpu" else "cpu",
                                       output_type=types.RGB)  # fmt: skip
            out = _geometry(images, start1=start1, shape1=shape1, size=size, norm=self.spec.norm,
                            start2=start2, shape2=shape2, mirror=mirror)  # fmt: skip
            pipe.set_outputs(out, label)
        pipe.build()
        return pipe

    def _next_inputs(self) -> tuple:
        """external_source callback: the next batch's inputs; StopIteration ends the epoch."""
        indices = next(self._feed)
        encoded, sizes = [], []
        for i in indices:
            data = read_image_bytes(self.files[i])
            sizes.append(header_size(data, self.files[i]))
            encoded.append(np.frombuffer(data, dtype=np.uint8))
        plans = self.spec.plans(sizes, epoch=self._feed_epoch, indices=indices)
        self._in_flight.append(indices)

        def pairs(field: str, part: slice, dtype=np.int32) -> np.ndarray:
            return np.array([getattr(p, field)[part] for p in plans], dtype=dtype)

        head, tail = slice(0, 2), slice(2, 4)
        return (encoded, self.labels[indices], pairs("crop1", head), pairs("crop1", tail), pairs("size", head, np.float32),
                pairs("crop2", head), pairs("crop2", tail), np.array([p.flip for p in plans], dtype=np.int32))  # fmt: skip

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch whose order and augmentation the next iteration uses (returns None)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.schedule)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._closed:
            raise RuntimeError("this loader was closed")
        if self._pipe is None:
            self._pipe = self._build()
        pipe = self._pipe
        self._feed_epoch = self.epoch
        self._feed = iter(self.schedule.batches(self.epoch))
        self._in_flight.clear()
        pipe.reset()
        finished = False
        try:
            while True:
                try:
                    images, labels = pipe.run()
                except StopIteration:
                    finished = True
                    return
                except InputError:
                    self._pipe = None  # raised by our callback: the pipeline's state is unknown
                    raise
                except RuntimeError as err:
                    self._pipe = None  # DALI pipelines do not survive an operator error
                    bad = _culprit([self.files[i] for batch in self._in_flight for i in batch])
                    if bad is None:
                        raise
                    raise bad from err
                self._in_flight.popleft()
                yield _to_torch(images, self.torch_device), _to_torch(labels, self.torch_device)
        finally:
            if not finished and self._pipe is pipe:
                self._drain(pipe)

    def _drain(self, pipe: Pipeline) -> None:
        """Ends an abandoned epoch: stops feeding and consumes what DALI already prefetched."""
        self._feed = iter(())
        try:
            while True:
                pipe.run()
        except StopIteration:
            pass
        except Exception:
            self._pipe = None
        self._in_flight.clear()

    def close(self) -> None:
        """Releases the DALI pipeline; the loader cannot be iterated again. Returns None."""
        self._pipe = None
        self._closed = True

    def __enter__(self) -> DaliLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DaliWindowCropper:
    """Window cropper on DALI; ``crop`` returns (N, 3, out, out) float32 normalised windows.

    One pipeline decodes each image once (``cpu`` or ``mixed``); a second one is fed the decoded
    image once per window together with that window's integer crop, and slices, resizes and
    normalises up to ``max_batch`` windows (of one or several images) per run.
    """

    def __init__(
        self,
        out_size: int,
        norm: Normalization,
        *,
        device: str = "cpu",
        num_threads: int = 2,
        max_batch: int = 256,
        decode_batch: int = 32,
    ) -> None:
        self.out_size = int(out_size)
        self.norm = norm
        self.device = device
        self.torch_device = torch_device(device)
        self.num_threads = num_threads
        self.max_batch = int(max_batch)
        self.decode_batch = int(decode_batch)
        self._decoder: Pipeline | None = None
        self._cropper: Pipeline | None = None

    def _build_decoder(self) -> Pipeline:
        pipe = _pipeline(self.decode_batch, self.num_threads, self.device, prefetch=1)
        with pipe:
            encoded = fn.external_source(name="encoded")
            pipe.set_outputs(fn.decoders.image(encoded, device="mixed" if self.device == "gpu" else "cpu",
                                               output_type=types.RGB))  # fmt: skip
        pipe.build()
        return pipe

    def _build_cropper(self) -> Pipeline:
        pipe = _pipeline(self.max_batch, self.num_threads, self.device, prefetch=1)
        with pipe:
            # no_copy: the same decoded image is fed once per window; run() is synchronous
            # (prefetch 1), so the arrays outlive their use.
            images = fn.external_source(
                name="images", device=self.device, layout="HWC", no_copy=self.device == "cpu"
            )
            start = fn.external_source(name="start")
            shape = fn.external_source(name="shape")
            size = [self.out_size, self.out_size]
            pipe.set_outputs(
                _geometry(images, start1=start, shape1=shape, size=size, norm=self.norm)
            )
        pipe.build()
        return pipe

    def _pixels(self, array: np.ndarray):
        """Returns a checked decoded image in the form the crop pipeline is fed (numpy or CUDA tensor)."""
        array = decode_image(array)
        return torch.from_numpy(array).to(self.torch_device) if self.device == "gpu" else array

    def _decode(self, sources: Sequence[ImageSource]) -> list:
        """Returns each source decoded once: numpy HxWx3 (cpu) or a CUDA uint8 tensor (gpu)."""
        decoded: list = [None] * len(sources)
        pending = []
        for k, source in enumerate(sources):
            if isinstance(source, np.ndarray) and source.ndim == 3:
                decoded[k] = self._pixels(source)
            else:
                pending.append(k)
        for at in range(0, len(pending), self.decode_batch):
            chunk = pending[at : at + self.decode_batch]
            encoded = [_encoded(sources[k]) for k in chunk]
            if self._decoder is None:
                self._decoder = self._build_decoder()
            try:
                (out,) = self._decoder.run(encoded=encoded)
            except RuntimeError as err:
                self._decoder = None
                bad = _culprit([sources[k] for k in chunk])
                if bad is None:
                    raise
                raise bad from err
            for j, k in enumerate(chunk):
                decoded[k] = self._sample(out, j)
        return decoded

    def _sample(self, tensor_list, j: int):
        """Returns sample ``j`` of the decoder's output as numpy (cpu) or a CUDA tensor (gpu)."""
        if self.device == "gpu":
            tensor = tensor_list[j]
            out = torch.empty(tensor.shape(), dtype=torch.uint8, device=self.torch_device)
            feed_ndarray(tensor, out, cuda_stream=torch.cuda.current_stream(self.torch_device))
            return out
        return np.array(tensor_list[j])

    def crop(self, image: ImageSource, boxes: np.ndarray) -> torch.Tensor:
        """Returns the windows ``boxes`` (N, 4 float x0 y0 x1 y1) of one image as (N, 3, out, out)."""
        return self.crop_many([(image, boxes)])[0]

    def crop_many(self, items: Sequence[tuple[ImageSource, np.ndarray]]) -> list[torch.Tensor]:
        """Returns one (N_i, 3, out, out) tensor per ``(image, boxes)`` item, batching windows across items.

        The tensors are views of one allocation holding every window of the call.
        """
        images = self._decode([image for image, _ in items])
        crops = [
            window_crops(boxes, int(im.shape[0]), int(im.shape[1]))
            for im, (_, boxes) in zip(images, items, strict=True)
        ]
        counts = [len(c) for c in crops]
        flat = np.concatenate(crops).astype(np.int32) if crops else np.zeros((0, 4), np.int32)
        owner = np.repeat(np.arange(len(crops)), counts)
        # DALI copies each batch straight into its rows of one tensor; items get views of it.
        out = torch.empty((len(flat), 3, self.out_size, self.out_size), device=self.torch_device)
        if len(flat) and self._cropper is None:
            self._cropper = self._build_cropper()
        for at in range(0, len(flat), self.max_batch):
            part = slice(at, at + self.max_batch)
            start = np.ascontiguousarray(flat[part, :2])
            shape = np.ascontiguousarray(flat[part, 2:])
            batch = [images[k] for k in owner[part]]
            try:
                (windows,) = self._cropper.run(images=batch, start=start, shape=shape)
            except RuntimeError:
                self._cropper = None  # DALI pipelines do not survive an operator error
                raise
            _to_torch(windows, self.torch_device, out=out[part])
        return list(torch.split(out, counts))

    def close(self) -> None:
        """Releases both DALI pipelines; returns None."""
        self._decoder = None
        self._cropper = None
