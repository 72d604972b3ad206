"""Quality scores of routed pairs and the gate they drive."""

from __future__ import annotations

import pytest

from lcm_jupyter.core.quality import QualityBoard, Score


def test_score_totals_share_and_json():
    score = Score("gpt-4o", "gpt-4o-mini", "chat", positive=3, negative=1)
    assert score.total == 4 and score.positive_share == 0.75
    assert Score("a", "b", None, 0, 0).positive_share is None
    assert score.to_json() == {
        "from_model": "gpt-4o",
        "to_model": "gpt-4o-mini",
        "intent": "chat",
        "positive": 3,
        "negative": 1,
        "total": 4,
        "positive_share": 0.75,
    }


def test_ratings_aggregate_per_pair_and_per_intent_sorted():
    board = QualityBoard()
    board.record("gpt-4o", "gpt-4o-mini", "qa", 1)
    board.record("gpt-4o", "gpt-4o-mini", "code", -1)
    board.record("GPT-4o", "gpt-4o-mini", "qa", 1)  # model names are case-insensitive
    board.record("claude-sonnet-4-5", "claude-haiku-4-5", None, -1)
    assert [
        (s.from_model, s.to_model, s.intent, s.positive, s.negative) for s in board.scores()
    ] == [
        ("claude-sonnet-4-5", "claude-haiku-4-5", None, 0, 1),
        ("gpt-4o", "gpt-4o-mini", None, 2, 1),
        ("gpt-4o", "gpt-4o-mini", "code", 0, 1),
        ("gpt-4o", "gpt-4o-mini", "qa", 2, 0),
    ]
    assert board.score("gpt-4o", "gpt-4o-mini", "qa") == Score("gpt-4o", "gpt-4o-mini", "qa", 2, 0)
    assert board.score("x", "y").total == 0


def test_a_second_rating_of_a_call_replaces_the_first():
    board = QualityBoard()
    board.record("gpt-4o", "gpt-4o-mini", "qa", 1)
    board.record("gpt-4o", "gpt-4o-mini", "qa", -1, previous=1)
    pair = board.score("gpt-4o", "gpt-4o-mini")
    assert (pair.positive, pair.negative) == (0, 1)
    assert board.score("gpt-4o", "gpt-4o-mini", "qa").negative == 1
    board.record("gpt-4o", "gpt-4o-mini", "qa", -1, previous=-1)  # the same again: no change
    assert board.score("gpt-4o", "gpt-4o-mini").total == 1
    # A replaced rating the board never saw (it predates a load) does not go below zero.
    board.record("gpt-4o", "gpt-4o-mini", "qa", 1, previous=1)
    board.record("gpt-4o", "gpt-4o-mini", "qa", -1, previous=1)
    board.record("gpt-4o", "gpt-4o-mini", "qa", -1, previous=1)
    assert board.score("gpt-4o", "gpt-4o-mini").positive == 0


def test_load_replaces_everything_and_skips_odd_rows():
    board = QualityBoard()
    board.record("a", "b", None, 1)
    board.load(
        [
            ("gpt-4o", "gpt-4o-mini", "qa", 1),
            ("gpt-4o", "gpt-4o-mini", "qa", -1),
            ("gpt-4o", "gpt-4o-mini", None, 1),
            ("gpt-4o", "gpt-4o-mini", "qa", 0),  # not a rating
            ("gpt-4o", "gpt-4o-mini", "qa", True),
            (None, "gpt-4o-mini", "qa", 1),
        ]
    )
    assert [(s.intent, s.positive, s.negative) for s in board.scores()] == [
        (None, 2, 1),
        ("qa", 1, 1),
    ]
    assert board.score("a", "b").total == 0


@pytest.mark.parametrize("bad", [0, 2, True, "1", None])
def test_record_refuses_scores_other_than_plus_or_minus_one(bad):
    board = QualityBoard()
    with pytest.raises(ValueError, match="score"):
        board.record("a", "b", None, bad)
    if bad is not None:
        with pytest.raises(ValueError, match="previous"):
            board.record("a", "b", None, 1, previous=bad)
    assert board.scores() == []


def test_gate_needs_enough_ratings_then_closes_and_recovers():
    board = QualityBoard(threshold=0.6, min_ratings=5)
    for _ in range(4):
        board.record("gpt-4o", "gpt-4o-mini", "qa", -1)
    assert board.gate("gpt-4o", "gpt-4o-mini") is None  # 4 ratings: not enough to judge
    board.record("gpt-4o", "gpt-4o-mini", "code", -1)
    assert board.gate("gpt-4o", "gpt-4o-mini") == (
        "quality gate: gpt-4o->gpt-4o-mini scored 0% over 5 ratings"
    )
    assert board.gate("GPT-4O", "gpt-4o-mini") is not None
    assert board.gate("gpt-4.1", "gpt-4.1-mini") is None  # other pairs are not affected
    for _ in range(7):
        board.record("gpt-4o", "gpt-4o-mini", "qa", 1)
    # 7 of 12 = 58%: still closed.
    assert "58% over 12 ratings" in board.gate("gpt-4o", "gpt-4o-mini")
    board.record("gpt-4o", "gpt-4o-mini", "qa", 1, previous=-1)  # a changed mind: 8 of 12
    assert board.gate("gpt-4o", "gpt-4o-mini") is None


def test_gate_at_exactly_the_threshold_stays_open():
    board = QualityBoard(threshold=0.5, min_ratings=2)
    board.record("a", "b", None, 1)
    board.record("a", "b", None, -1)
    assert board.gate("a", "b") is None


@pytest.mark.parametrize(
    "kwargs", [{"threshold": 1.5}, {"threshold": -0.1}, {"min_ratings": 0}, {"min_ratings": 2.5}]
)
def test_board_settings_are_checked(kwargs):
    with pytest.raises(ValueError):
        QualityBoard(**kwargs)
