"""The Schwartz-values vocabulary and the profile's JSON round trip."""

import pytest

from starrec.contract.values import (
    SCHWARTZ_VALUES,
    VALUE_DESCRIPTIONS,
    ValueProfile,
    profile_from_weights,
    uniform_profile,
)


def test_ten_values_each_described() -> None:
    assert len(SCHWARTZ_VALUES) == 10
    assert set(VALUE_DESCRIPTIONS) == set(SCHWARTZ_VALUES)


def test_profile_round_trip_and_top() -> None:
    profile = profile_from_weights(
        "u1",
        {"hedonism": 0.9, "stimulation": 1.7, "tradition": -1},
        reasons={"hedonism": "comedies"},
        item_ids={"hedonism": ["i1", "i2"]},
    )
    assert profile.weights()["stimulation"] == 1.0  # clipped
    assert profile.weights()["tradition"] == 0.0
    assert [s.value for s in profile.top(2)] == ["stimulation", "hedonism"]
    again = ValueProfile.from_dict(profile.to_dict())
    assert again == profile
    assert again.scores[SCHWARTZ_VALUES.index("hedonism")].item_ids == ("i1", "i2")


def test_profile_rejects_wrong_values_and_weights() -> None:
    good = uniform_profile("u1")
    with pytest.raises(ValueError, match="each Schwartz value once"):
        ValueProfile(user_id="u1", scores=good.scores[:9])
    with pytest.raises(ValueError, match="unknown values"):
        ValueProfile.from_dict({"user_id": "u1", "values": [{"value": "greed", "weight": 1}]})
    payload = good.to_dict()
    payload["values"][0]["weight"] = 3
    with pytest.raises(ValueError, match="outside"):
        ValueProfile.from_dict(payload)
