"""How well a classifier tells two populations of destination-hours apart: advantage =
TPR - FPR of its out-of-fold predictions, cross-validated by destination (no destination's
hours on both sides of a split), with a one-sided 95 % bound from a bootstrap over
destinations. Two models: logistic regression (standardised features) and gradient-boosted
trees; the larger advantage is reported, which errs towards "visible"."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from i2p_multihome_dev.invisibility.features import Sample

FOLDS = 5
BOOTSTRAP_ROUNDS = 1000


@dataclass(frozen=True)
class Advantage:
    advantage: float
    upper95: float
    model: str
    samples: int  # destination-hours, both classes
    destinations: int
    per_model: dict[str, float]

    def to_json(self) -> dict[str, object]:
        return {
            "advantage": round(self.advantage, 4),
            "upper95": round(self.upper95, 4),
            "model": self.model,
            "samples": self.samples,
            "destinations": self.destinations,
            "per_model": {k: round(v, 4) for k, v in self.per_model.items()},
        }


def tpr_minus_fpr(labels: Sequence[int], predicted: Sequence[int]) -> float:
    positives = [p for y, p in zip(labels, predicted, strict=True) if y == 1]
    negatives = [p for y, p in zip(labels, predicted, strict=True) if y == 0]
    if not positives or not negatives:
        return 0.0
    return sum(positives) / len(positives) - sum(negatives) / len(negatives)


def models(seed: int) -> dict[str, object]:
    return {
        "logistic": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
        "boosted_trees": HistGradientBoostingClassifier(max_iter=150, random_state=seed),
    }


def advantage(
    positive: Sequence[Sample],
    negative: Sequence[Sample],
    features: Sequence[str],
    seed: int = 1,
    rounds: int = BOOTSTRAP_ROUNDS,
) -> Advantage:
    """The advantage of telling `positive` (label 1) from `negative` (label 0) apart on
    `features`."""
    samples = [*positive, *negative]
    labels = np.array([1] * len(positive) + [0] * len(negative))
    groups = [f"{s.population}/{s.destination}" for s in samples]
    x = np.array([[s.features[f] for f in features] for s in samples], dtype=float)
    group_ids = {g: i for i, g in enumerate(sorted(set(groups)))}
    group_index = np.array([group_ids[g] for g in groups])
    per_class_groups = min(
        len({g for g, y in zip(groups, labels, strict=True) if y == label}) for label in (0, 1)
    )
    folds = StratifiedGroupKFold(n_splits=min(FOLDS, per_class_groups), shuffle=True,
                                 random_state=seed)  # fmt: skip
    predictions = {}
    for name, model in models(seed).items():
        predicted = cross_val_predict(model, x, labels, groups=group_index, cv=folds)
        predictions[name] = [int(p) for p in predicted]
    per_model = {name: tpr_minus_fpr(list(labels), p) for name, p in predictions.items()}
    best = max(per_model, key=lambda name: per_model[name])
    bound = _bootstrap_upper95(list(labels), predictions[best], groups, seed, rounds)
    return Advantage(per_model[best], bound, best, len(samples), len(group_ids), per_model)


def _bootstrap_upper95(
    labels: list[int], predicted: list[int], groups: list[str], seed: int, rounds: int
) -> float:
    """The 95th percentile of the advantage over resamples of whole destinations (each
    class resampled on its own, so both stay represented)."""
    by_group: dict[str, list[int]] = {}
    for i, group in enumerate(groups):
        by_group.setdefault(group, []).append(i)
    classes = {
        label: [g for g, idx in by_group.items() if labels[idx[0]] == label] for label in (0, 1)
    }
    rng = random.Random(seed)
    values = []
    for _ in range(rounds):
        chosen = [
            i
            for label in (0, 1)
            for g in rng.choices(classes[label], k=len(classes[label]))
            for i in by_group[g]
        ]
        values.append(tpr_minus_fpr([labels[i] for i in chosen], [predicted[i] for i in chosen]))
    values.sort()
    return values[min(len(values) - 1, int(0.95 * len(values)))]
