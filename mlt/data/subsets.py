"""Class subsets of a source set for pretraining: the paper's source-set experiments.

Oquab et al. compare trunks pretrained on different source class sets (``PAPER.md``,
"Source-set experiments"). Each is a :func:`select_classes` call over the source set's wnids:

- **PRE-1000C** (ILSVRC-2012's 1000 classes): ``kind="all"``: every class of the source set.
- **PRE-1000R** (1000 random classes from the larger ImageNet pool): ``kind="random", n=1000``
  over the full ImageNet wnid list. On Tiny-ImageNet (200 classes) the stand-in is
  ``kind="random", n=100``: a seeded random half.
- **PRE-1512** (the 1000 + 512 classes related to the target): ``kind="related", n=1512``: the
  label map's related wnids plus ``n - len(related)`` others drawn at random (seeded). On
  Tiny-ImageNet with the TinyVOC label map, ``kind="related", n=100`` is the related classes
  (30 in the shipped map) + 70 others; ``kind="related"`` without n is the related alone.
- The control without the target's classes: ``kind="unrelated"`` (the 170 others for TinyVOC),
  optionally ``n`` of them; ``exclude`` removes classes from every draw (e.g. TinyVOC's 24
  background scene classes).
- ``kind="list"``: an explicit ``classes`` list.

Draws use ``numpy.random.default_rng(seed).choice`` without replacement over the *sorted* pool,
so a result depends on the seed and the set of wnids, never on their input order. Results are
sorted; label i of a pretraining run is the i-th wnid.
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Sequence

import numpy as np

from mlt.data.labelmap import LabelMap
from mlt.errors import InputError

SUBSET_KINDS = ("all", "random", "related", "unrelated", "list")
_TAKES_N = ("random", "related", "unrelated")


def select_classes(
    all_wnids: Sequence[str],
    kind: str,
    n: int | None = None,
    seed: int = 0,
    label_map: LabelMap | None = None,
    classes: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
) -> list[str]:
    """Returns the sorted wnids of the ``kind`` subset of ``all_wnids`` (see the module docstring).

    ``n`` is required for "random", optional for "related" and "unrelated", and refused for
    "all" and "list". ``exclude`` wnids are never selected.
    """
    if kind not in SUBSET_KINDS:
        raise InputError(
            None, "subset.kind", kind, f"one of {list(SUBSET_KINDS)}", kind="bad subset"
        )
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InputError(None, "subset.seed", seed, "a non-negative integer", kind="bad value")
    pool = sorted(set(all_wnids))
    excluded = _known(exclude, pool, "subset.exclude")
    n = _check_n(n, kind)
    if kind == "list":
        if not classes:
            raise InputError(
                None,
                "subset.classes",
                classes,
                "a non-empty list of wnids for kind=list",
                kind="bad subset",
            )
        chosen = _known(classes, pool, "subset.classes")
        _refuse_excluded(chosen, excluded, "subset.classes")
        return sorted(chosen)
    if kind in ("related", "unrelated"):
        related = _related(label_map, pool)
        if kind == "related":
            _refuse_excluded(related, excluded, "data.label_map")
            if n is None or n == len(related):
                return sorted(related)
            if n < len(related):
                return _draw(sorted(related), n, seed)
            others = [w for w in pool if w not in related and w not in excluded]
            return sorted(related | set(_draw(others, n - len(related), seed, offset=len(related))))
        rest = [w for w in pool if w not in related and w not in excluded]
        return rest if n is None else _draw(rest, n, seed)
    candidates = [w for w in pool if w not in excluded]
    if kind == "all":
        return candidates
    return _draw(candidates, n, seed)


def subset_digest(wnids: Sequence[str]) -> str:
    """Returns a 12-hex-digit sha256 of the sorted, de-duplicated wnids, for run tags and names."""
    return hashlib.sha256("\n".join(sorted(set(wnids))).encode()).hexdigest()[:12]


def _check_n(n: object, kind: str) -> int | None:
    if n is None:
        if kind == "random":
            raise InputError(
                None, "subset.n", n, "a class count for kind=random", kind="missing value"
            )
        return None
    if kind not in _TAKES_N:
        raise InputError(
            None,
            "subset.n",
            n,
            f"no n with kind={kind} (n applies to {', '.join(_TAKES_N)})",
            kind="bad subset",
        )
    try:
        value = operator.index(n)
    except TypeError:
        value = None
    if value is None or isinstance(n, bool) or value < 1:
        raise InputError(None, "subset.n", n, "a positive integer", kind="bad value")
    return value


def _draw(pool: list[str], n: int, seed: int, offset: int = 0) -> list[str]:
    """Returns n of the sorted ``pool`` drawn without replacement by ``default_rng(seed)``, sorted.

    ``offset`` is added to the counts in the error message (for related + others).
    """
    if n > len(pool):
        raise InputError(
            None,
            "subset.n",
            n + offset,
            f"at most {len(pool) + offset} classes to choose from",
            kind="bad value",
        )
    picks = np.random.default_rng(seed).choice(len(pool), size=n, replace=False)
    return sorted(pool[i] for i in picks)


def _related(label_map: LabelMap | None, pool: list[str]) -> set[str]:
    if label_map is None:
        raise InputError(
            None,
            "data.label_map",
            None,
            "a label map for subset kinds related/unrelated",
            kind="missing value",
        )
    related = label_map.related_wnids()
    missing = [w for w in related if w not in set(pool)]
    if missing:
        raise InputError(
            label_map.path,
            "classes",
            missing if len(missing) > 1 else missing[0],
            f"wnids of the source set ({len(pool)} classes); the label map names unknown classes",
            kind="unknown class",
        )
    return set(related)


def _known(wnids: Sequence[str], pool: list[str], field: str) -> set[str]:
    if isinstance(wnids, str):
        raise InputError(None, field, wnids, "a list of wnids, not one string", kind="bad value")
    known = set(pool)
    for w in wnids:
        if w not in known:
            raise InputError(
                None,
                field,
                w,
                f"a class of the source set ({len(pool)} classes)",
                kind="unknown class",
            )
    return set(wnids)


def _refuse_excluded(chosen: set[str], excluded: set[str], field: str) -> None:
    both = sorted(chosen & excluded)
    if both:
        raise InputError(
            None, field, both, "no class that subset.exclude also names", kind="bad subset"
        )
