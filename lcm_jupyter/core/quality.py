"""Users' ratings of routed calls, aggregated per model pair, and the gate they drive.

Auto routing asks `QualityBoard.gate` before sending a request from one model to a
cheaper one: once a pair has enough ratings and too few of them are positive, the
pair is closed. It reopens by itself when later (or changed) ratings lift the share.
Model names are compared case-insensitively; intents as given.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["QualityBoard", "Score"]

_SCORES = (1, -1)


@dataclass(frozen=True, slots=True)
class Score:
    """Positive and negative ratings of one (from, to) pair, overall or for one intent."""

    from_model: str
    to_model: str
    intent: str | None
    positive: int
    negative: int

    @property
    def total(self) -> int:
        """Number of ratings."""
        return self.positive + self.negative

    @property
    def positive_share(self) -> float | None:
        """Share of positive ratings, None when there are none."""
        total = self.total
        return self.positive / total if total else None

    def to_json(self) -> dict[str, Any]:
        """JSON-safe dict, with total and positive_share."""
        return {
            "from_model": self.from_model,
            "to_model": self.to_model,
            "intent": self.intent,
            "positive": self.positive,
            "negative": self.negative,
            "total": self.total,
            "positive_share": self.positive_share,
        }


# (from, to, intent or None for the whole pair) -> [positive, negative]
_Key = tuple[str, str, str | None]


def _model(name: str) -> str:
    """The form a model name is counted under."""
    return name.strip().lower()


def _check(score: Any, what: str) -> int:
    if isinstance(score, bool) or score not in _SCORES:
        raise ValueError(f"{what} must be 1 or -1, got {score!r}")
    return score


class QualityBoard:
    """In-memory feedback aggregates per (from, to) pair and per (from, to, intent)."""

    __slots__ = ("_counts", "min_ratings", "threshold")

    def __init__(self, *, threshold: float = 0.6, min_ratings: int = 20) -> None:
        """A board gating pairs whose positive share is below `threshold` over `min_ratings`."""
        if isinstance(threshold, bool) or not 0 <= threshold <= 1:
            raise ValueError(f"threshold must be between 0 and 1, got {threshold!r}")
        if isinstance(min_ratings, bool) or not isinstance(min_ratings, int) or min_ratings < 1:
            raise ValueError(f"min_ratings must be a whole number above 0, got {min_ratings!r}")
        self.threshold = threshold
        self.min_ratings = min_ratings
        self._counts: dict[_Key, list[int]] = {}

    def load(self, rows: Iterable[tuple[str, str, str | None, int]]) -> None:
        """Replace every aggregate with (from_model, to_model, intent, score) rows."""
        self._counts = {}
        for from_model, to_model, intent, score in rows:
            # Rows come from the log: one odd value must not stop the board from loading.
            if not from_model or not to_model or isinstance(score, bool) or score not in _SCORES:
                continue
            self._add(from_model, to_model, intent, score, 1)

    def record(
        self,
        from_model: str,
        to_model: str,
        intent: str | None,
        score: int,
        *,
        previous: int | None = None,
    ) -> None:
        """Count a rating; with `previous`, it replaces that earlier rating of the same call."""
        _check(score, "score")
        if previous is not None:
            _check(previous, "previous")
            if previous == score:
                return
            self._add(from_model, to_model, intent, previous, -1)
        self._add(from_model, to_model, intent, score, 1)

    def _add(self, from_model: str, to_model: str, intent: str | None, score: int, n: int) -> None:
        """Add `n` (or take it away, n=-1) to the pair's and the pair+intent's counts."""
        pair = (_model(from_model), _model(to_model))
        slot = 0 if score > 0 else 1
        keys: tuple[_Key, ...] = (
            ((*pair, None),) if intent is None else ((*pair, None), (*pair, intent))
        )
        for key in keys:
            counts = self._counts.setdefault(key, [0, 0])
            # Never below zero: a replaced rating may predate what the board was loaded with.
            counts[slot] = max(counts[slot] + n, 0)

    def scores(self) -> list[Score]:
        """Every pair's score (intent None) and each pair+intent's, sorted, pair first."""
        keys = sorted(self._counts, key=lambda k: (k[0], k[1], k[2] is not None, k[2] or ""))
        return [Score(f, t, i, *self._counts[(f, t, i)]) for f, t, i in keys]

    def score(self, from_model: str, to_model: str, intent: str | None = None) -> Score:
        """The score of one pair (or pair+intent); zero counts when never rated."""
        key = (_model(from_model), _model(to_model), intent)
        positive, negative = self._counts.get(key, (0, 0))
        return Score(key[0], key[1], intent, positive, negative)

    def gate(self, from_model: str, to_model: str) -> str | None:
        """Why auto routing must not use this pair now, or None when it may."""
        score = self.score(from_model, to_model)
        share = score.positive_share
        if share is None or score.total < self.min_ratings or share >= self.threshold:
            return None
        return (
            f"quality gate: {score.from_model}->{score.to_model} scored {share:.0%} "
            f"over {score.total} ratings"
        )
