"""VOC average precision (2007 11-point and 2010+ area), the AP table and the image labels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve

from mlt.data.voc import VocAnnotation, VocDataset, VocObject
from mlt.errors import InputError
from mlt.evaluate import (
    APTable,
    ap_table,
    area_ap,
    average_precision,
    class_boxes,
    image_labels,
    voc07_ap,
)


def devkit_loop(scores, gt, form):
    """The devkit's VOCevalcls + VOCap, written out with plain loops (no removal of gt 0:
    those images are neither tp nor fp, as in the devkit)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # Python's sort is stable
    npos = sum(1 for g in gt if g > 0)
    tp = fp = 0
    rec, prec = [], []
    for i in order:
        tp += gt[i] > 0
        fp += gt[i] < 0
        if gt[i] == 0:
            continue  # a repeated (rec, prec) point; skipping it avoids 0/0 at the top
        rec.append(tp / npos)
        prec.append(tp / (tp + fp))
    if form == "voc07":
        ap = 0.0
        for i in range(11):
            t = i / 10
            above = [p for r, p in zip(rec, prec, strict=True) if r >= t]
            ap += (max(above) if above else 0.0) / 11
        return ap
    mrec = [0.0, *rec, 1.0]
    mpre = [0.0, *prec, 0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    return sum(
        (mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1]
    )


def random_case(rng, n, with_zero=False, ties=False):
    scores = rng.integers(0, 5, n) / 4 if ties else rng.random(n)
    gt = rng.choice([1, -1, 0] if with_zero else [1, -1], n)
    if not (gt == 1).any():
        gt[rng.integers(n)] = 1
    return scores, gt


# --- against scikit-learn -------------------------------------------------------------------


def monotone_sklearn_area(scores, gt):
    """VOC area AP rebuilt from sklearn's PR curve with the precision envelope taken by hand."""
    precision, recall, _ = precision_recall_curve(gt == 1, scores)
    precision, recall = precision[::-1], recall[::-1]  # increasing recall, from (0, 1)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum(np.diff(recall) * envelope[1:]))


def test_area_ap_matches_sklearn_when_precision_at_hits_is_monotone():
    # sklearn's AP is sum_n (R_n - R_{n-1}) P_n, the step area without the envelope; VOC's area
    # AP uses max_{r' >= R_n} P(r'). Precision only rises at a hit, so the envelope at a hit is
    # the max precision at later hits: the two coincide exactly when the precision at
    # successive hits never rises (no tied scores). Such rankings are checked here.
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(3000):
        scores, gt = random_case(rng, int(rng.integers(2, 12)))
        hits = gt[np.argsort(-scores)] == 1
        at_hits = (np.cumsum(hits) / np.arange(1, len(hits) + 1))[hits]
        if np.all(np.diff(at_hits) <= 0):
            assert area_ap(scores, gt) == pytest.approx(
                average_precision_score(gt, scores), abs=1e-6
            )
            checked += 1
    assert checked > 100


def test_area_ap_matches_sklearn_curve_made_monotone_and_bounds_sklearn_ap():
    rng = np.random.default_rng(1)
    strictly_above = 0
    for _ in range(300):
        scores, gt = random_case(rng, int(rng.integers(2, 60)))
        ours = area_ap(scores, gt)
        assert ours == pytest.approx(monotone_sklearn_area(scores, gt), abs=1e-6)
        sk = average_precision_score(gt, scores)
        assert ours >= sk - 1e-12  # the envelope never lowers precision
        strictly_above += ours > sk + 1e-9
    assert strictly_above > 50  # in general the two definitions differ


# --- against the devkit written as loops ----------------------------------------------------


@pytest.mark.parametrize("form", ["voc07", "area"])
@pytest.mark.parametrize("ties", [False, True])
def test_matches_devkit_loop(form, ties):
    rng = np.random.default_rng(2)
    for _ in range(300):
        n = int(rng.integers(1, 40))
        scores, gt = random_case(rng, n, with_zero=True, ties=ties)
        assert average_precision(scores, gt, form) == pytest.approx(
            devkit_loop(scores.tolist(), gt.tolist(), form), abs=1e-12
        )


def test_recall_exactly_on_a_threshold_counts_as_reaching_it():
    # 10 positives: rank 3 reaches recall exactly 0.3. Ranking P P P N N ... then the others.
    gt = np.array([1, 1, 1] + [-1] * 7 + [1] * 7)
    scores = -np.arange(len(gt), dtype=float)
    # Precision 1 up to recall 0.3; after that the best precision from rank 11 on is at the end:
    # 10/17. So 4 thresholds (0, .1, .2, .3) at 1 and 7 at 10/17.
    assert voc07_ap(scores, gt) == pytest.approx((4 + 7 * 10 / 17) / 11, abs=1e-12)


# --- hand-worked cases ----------------------------------------------------------------------


def test_voc07_hand_worked():
    # Ranked P N P: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1.
    # t = 0 .. 0.5 (6 thresholds): max precision at recall >= t is 1;
    # t = 0.6 .. 1 (5 thresholds): only rank 3 qualifies, 2/3.  AP = (6 + 5 * 2/3) / 11 = 28/33.
    scores, gt = np.array([0.9, 0.8, 0.7]), np.array([1, -1, 1])
    assert voc07_ap(scores, gt) == pytest.approx(28 / 33, abs=1e-12)
    # Area: recall 0 -> 1/2 at precision 1, 1/2 -> 1 at 2/3: 1/2 + 1/3 = 5/6.
    assert area_ap(scores, gt) == pytest.approx(5 / 6, abs=1e-12)


def test_voc07_hand_worked_interpolation_looks_ahead():
    # Ranked N P N N P P (3 positives): precision at hits 1/2 (rank 2), 2/5 (rank 5), 1/2 (rank 6)
    # recall 1/3, 2/3, 1. Envelope: every threshold sees rank 6's precision 1/2, so AP = 1/2,
    # although precision at recall 2/3 is only 2/5. Area: 1/3*1/2 + 1/3*1/2 + 1/3*1/2 = 1/2.
    gt = np.array([-1, 1, -1, -1, 1, 1])
    scores = np.linspace(1, 0, 6)
    assert voc07_ap(scores, gt) == pytest.approx(0.5, abs=1e-12)
    assert area_ap(scores, gt) == pytest.approx(0.5, abs=1e-12)


def test_voc07_hand_worked_unreached_thresholds_would_be_zero():
    # Ranked P N N N (1 positive): precision 1 at recall 1, every threshold gets 1: AP 1.
    assert voc07_ap(np.array([4.0, 3, 2, 1]), np.array([1, -1, -1, -1])) == 1.0
    # Ranked N N N P: precision 1/4 at recall 1 reaches every threshold: AP 1/4.
    assert voc07_ap(np.array([4.0, 3, 2, 1]), np.array([-1, -1, -1, 1])) == pytest.approx(0.25)


def test_perfect_and_reversed_rankings():
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    for form in ("voc07", "area"):
        assert average_precision(scores, np.array([1, 1, -1, -1]), form) == 1.0
        # Ranked N N P P: precision 1/3 and 2/4 at the hits, envelope 1/2 everywhere.
        assert average_precision(scores, np.array([-1, -1, 1, 1]), form) == pytest.approx(0.5)


def test_swapping_a_positive_and_a_negative_score_changes_ap():
    rng = np.random.default_rng(3)
    scores, gt = random_case(rng, 30)
    pos, neg = np.flatnonzero(gt == 1), np.flatnonzero(gt == -1)
    best_pos = pos[np.argmax(scores[pos])]
    worst_neg = neg[np.argmin(scores[neg])]
    assert scores[best_pos] > scores[worst_neg]
    swapped = scores.copy()
    swapped[[best_pos, worst_neg]] = swapped[[worst_neg, best_pos]]
    for form in ("voc07", "area"):
        assert average_precision(swapped, gt, form) < average_precision(scores, gt, form)
    # Sorting the positives above every negative gives exactly 1.
    perfect = np.where(gt == 1, 1.0 + scores, scores)
    assert area_ap(perfect, gt) == 1.0 and voc07_ap(perfect, gt) == 1.0


def test_ties_keep_input_order():
    # Stable sort: among equal scores the earlier image ranks first.
    assert area_ap(np.array([0.5, 0.5]), np.array([1, -1])) == 1.0
    assert area_ap(np.array([0.5, 0.5]), np.array([-1, 1])) == 0.5


@pytest.mark.parametrize("form", ["voc07", "area"])
def test_difficult_only_images_are_ignored(form):
    rng = np.random.default_rng(4)
    scores, gt = random_case(rng, 25)
    base = average_precision(scores, gt, form)
    extra = rng.random(10) * 2 - 0.5  # any scores, including above every other one
    mixed_scores = np.concatenate([extra[:5], scores, extra[5:]])
    mixed_gt = np.concatenate([np.zeros(5, int), gt, np.zeros(5, int)])
    assert average_precision(mixed_scores, mixed_gt, form) == pytest.approx(base, abs=1e-15)


def test_no_positives_is_nan():
    assert math.isnan(area_ap(np.array([0.1, 0.2]), np.array([-1, 0])))
    assert math.isnan(voc07_ap(np.array([]), np.array([], dtype=int)))
    assert area_ap(np.array([0.3]), np.array([1])) == 1.0  # no negatives: precision 1


@pytest.mark.parametrize(
    "scores, gt, match",
    [
        (np.zeros(3), np.ones(2, int), "same length"),
        (np.zeros((2, 2)), np.ones((2, 2), int), "1-D"),
        (np.array([0.1, np.nan]), np.array([1, -1]), "NaN"),
        (np.array([0.1, 0.2]), np.array([1, 2]), "1, -1 or 0"),
    ],
)
def test_bad_input_is_refused(scores, gt, match):
    with pytest.raises(ValueError, match=match):
        area_ap(scores, gt)


def test_unknown_form_is_refused():
    with pytest.raises(ValueError, match="form"):
        average_precision(np.array([0.1]), np.array([1]), "voc12")


# --- the table --------------------------------------------------------------------------------


def test_ap_table_per_class_mean_skips_nan_and_metrics():
    rng = np.random.default_rng(5)
    scores = rng.random((40, 3))
    gt = rng.choice([1, -1, 0], (40, 3))
    gt[:, 2] = np.where(gt[:, 2] == 1, -1, gt[:, 2])  # class "c" has no positives
    table = ap_table(scores, gt, ["a", "b", "c"], "voc07")
    assert isinstance(table, APTable)
    for c in range(2):
        assert table.ap[c] == voc07_ap(scores[:, c], gt[:, c])
    assert math.isnan(table.ap[2])
    assert table.mean_ap == pytest.approx((table.ap[0] + table.ap[1]) / 2)
    assert table.n_pos.tolist() == (gt == 1).sum(0).tolist()

    metrics = table.to_metrics("val_")
    assert set(metrics) == {"val_ap_a", "val_ap_b", "val_mAP"}
    assert metrics["val_mAP"] == table.mean_ap
    text = table.format()
    assert "11-point" in text and "n/a" in text and "over 2 classes" in text
    assert f"{100 * table.mean_ap:6.1f}" in text.splitlines()[-1]


def test_ap_table_all_nan_and_shape_errors():
    table = ap_table(np.zeros((2, 1)), -np.ones((2, 1), int), ["a"], "area")
    assert math.isnan(table.mean_ap)
    metrics = table.to_metrics()
    assert list(metrics) == ["mAP"] and math.isnan(metrics["mAP"])
    with pytest.raises(ValueError, match="shape"):
        ap_table(np.zeros((2, 2)), np.ones((2, 2), int), ["a"])
    with pytest.raises(ValueError, match="form"):
        ap_table(np.zeros((2, 1)), np.ones((2, 1), int), ["a"], "bad")


# --- ground truth -----------------------------------------------------------------------------


def test_image_labels_devkit_rules():
    def obj(name, difficult=False):
        return VocObject(name, (0.0, 0.0, 2.0, 2.0), difficult)

    anns = [
        VocAnnotation("a", "a.jpg", 4, 4, (obj("cat"), obj("cat", True), obj("dog", True))),
        VocAnnotation("b", "b.jpg", 4, 4, ()),
        VocAnnotation("c", "c.jpg", 4, 4, (obj("dog", True), obj("dog"))),
    ]
    labels = image_labels(anns, ["cat", "dog", "cow"])
    assert labels.dtype == np.int8
    assert labels.tolist() == [[1, 0, -1], [-1, -1, -1], [-1, 1, -1]]
    with pytest.raises(InputError, match="unknown class"):
        image_labels(anns, ["cat"])
    per_class = class_boxes(anns[0], ["cat", "dog", "cow"], include_difficult=False)
    assert [len(b) for b in per_class] == [1, 0, 0]
    assert [len(b) for b in class_boxes(anns[0], ["cat", "dog", "cow"])] == [2, 1, 0]


def test_image_labels_on_tinyvoc_match_the_devkit_lists(tinyvoc_root):
    ds = VocDataset(tinyvoc_root)
    ids = ds.ids("val")[:40]
    anns = [ds.annotation(i) for i in ids]
    labels = image_labels(anns, ds.classes)
    assert labels.shape == (len(ids), len(ds.classes))
    for r, ann in enumerate(anns):
        for o in ann.objects:
            if not o.difficult:
                assert labels[r, ds.classes.index(o.name)] == 1
    for c, cls in enumerate(ds.classes):
        listed = ds.class_labels(cls, "val")
        assert labels[:, c].tolist() == [listed[i] for i in ids], cls
