"""Item value profiles, user value vectors and value affinity, with a deterministic fake embedder."""

from __future__ import annotations

import numpy as np
import pytest
from values_fixtures import FakeValueEmbedder, build_value_dataset, hub_tasks, value_item

from starrec.contract.values import SCHWARTZ_VALUES
from starrec.tools.value_profiles import (
    ItemValueProfiles,
    candidate_affinity,
    item_ids_of,
    item_text,
    item_value_profiles,
    profiles_from_embeddings,
    top_values,
    user_value_matrix,
    user_values_from_profiles,
    value_affinity,
)


@pytest.fixture
def dataset():
    return build_value_dataset()


def test_each_item_gets_a_distribution_led_by_the_value_its_text_names(dataset, tmp_path) -> None:
    profiles = item_value_profiles(dataset, FakeValueEmbedder(), cache_dir=tmp_path)
    assert profiles.matrix.shape == (len(dataset.items), 10) and profiles.matrix.dtype == np.float32
    np.testing.assert_allclose(profiles.matrix.sum(axis=1), 1.0, atol=1e-5)
    assert (profiles.matrix >= 0).all()
    for value in SCHWARTZ_VALUES:
        assert top_values(profiles.weights(value_item(value, 0)), 1) == [value]
    assert item_text(dataset, value_item("self_direction", 2)) == "self-direction film 2. self-direction"


def test_profiles_are_cached_and_round_trip(dataset, tmp_path) -> None:
    embedder = FakeValueEmbedder()
    first = item_value_profiles(dataset, embedder, cache_dir=tmp_path)
    calls = embedder.calls
    second = item_value_profiles(dataset, embedder, cache_dir=tmp_path)
    assert embedder.calls == calls, "a cached catalogue must not be embedded again"
    assert second.item_ids == first.item_ids and second.embedder == "fake-values"
    np.testing.assert_array_equal(second.matrix, first.matrix)
    changed = item_value_profiles(dataset, embedder, cache_dir=tmp_path, temperature=0.5)
    assert embedder.calls > calls and not np.allclose(changed.matrix, first.matrix)


def test_a_bad_temperature_or_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="temperature must be > 0"):
        profiles_from_embeddings(np.eye(3, 4), np.eye(10, 4), temperature=0)
    with pytest.raises(ValueError, match="does not match 2 items x 10 values"):
        ItemValueProfiles(("a", "b"), np.zeros((3, 10), dtype=np.float32), "x")


def test_user_vectors_are_the_mean_of_their_training_items_and_leak_nothing(dataset, tmp_path) -> None:
    profiles = item_value_profiles(dataset, FakeValueEmbedder(), cache_dir=tmp_path)
    view = dataset.hide_from(hub_tasks(dataset))
    users = ["u_benevolence", "u_power", "nobody"]
    matrix = user_value_matrix(view, users, profiles)
    assert matrix.shape == (3, 10) and matrix.dtype == np.float32
    expected = profiles.rows([value_item("benevolence", j) for j in range(3)]).mean(axis=0)
    np.testing.assert_allclose(matrix[0], expected, atol=1e-6)
    assert top_values(dict(zip(SCHWARTZ_VALUES, matrix[1], strict=True)), 1) == ["power"]
    np.testing.assert_allclose(matrix[2], profiles.centre, atol=1e-6)
    # The full data holds the hidden answer (a power item): only the view's history may be read.
    leaked = user_value_matrix(dataset, users, profiles)
    power = SCHWARTZ_VALUES.index("power")
    assert leaked[0][power] > matrix[0][power]


def test_affinity_prefers_candidates_that_share_the_users_values(dataset, tmp_path) -> None:
    profiles = item_value_profiles(dataset, FakeValueEmbedder(), cache_dir=tmp_path)
    view = dataset.hide_from(hub_tasks(dataset))
    candidates = [value_item(v, 3) for v in SCHWARTZ_VALUES]
    affinity = candidate_affinity(item_ids_of(view.history("u_tradition")), candidates, profiles)
    assert max(affinity, key=affinity.get) == value_item("tradition", 3)
    assert affinity[value_item("tradition", 3)] > 0.5 > max(
        score for item, score in affinity.items() if item != value_item("tradition", 3)
    )
    assert candidate_affinity((), candidates, profiles) == dict.fromkeys(candidates, 0.0)
    flat = value_affinity(profiles.centre, profiles.rows(candidates), profiles.centre)
    np.testing.assert_array_equal(flat, 0.0)


def test_bpr_user_values_source_reads_the_view_it_is_given(dataset, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("STARREC_CACHE_DIR", str(tmp_path))
    source = user_values_from_profiles(embedder=FakeValueEmbedder())
    view = dataset.hide_from(hub_tasks(dataset))
    users = ["u_security", "u_hedonism"]
    matrix = source(view, users)
    profiles = item_value_profiles(view, FakeValueEmbedder(), cache_dir=tmp_path)
    np.testing.assert_allclose(matrix, user_value_matrix(view, users, profiles), atol=1e-6)
    assert list((tmp_path / "values").glob("item-profiles-*.npz")), "profiles are cached offline"
