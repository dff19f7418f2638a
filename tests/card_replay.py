"""The check both shipped recipes' replay tests make: replayed steps log a card's first losses."""

from __future__ import annotations

import pytest


def assert_replays_first_losses(logged: list[dict], replayed: list[dict]) -> None:
    """Each replayed step has the card's step, scene and learning rate, and every loss term within rel
    1e-5 (an ulp between machines of one kind is ~1e-7; a changed stream, clip, rate or loss moves them
    by far more)."""
    for card_row, step in zip(logged, replayed, strict=True):
        assert (card_row["step"], card_row["scene"]) == (step["step"], step["scene"])
        assert step["lr"] == pytest.approx(card_row["lr"], rel=1e-12)
        for key, value in card_row.items():
            if key.endswith("loss") and value is not None:
                assert step[key] == pytest.approx(value, rel=1e-5), key
