"""1:1 verification: decisions at calibrated operating points, typed errors, the CLI."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from matcher.models.cards import load_card

import matcher
from matcher.calibration import lookup, write_into_card
from matcher.cli import main
from matcher.decision import Decision
from matcher.errors import CalibrationError, ModelMismatchError, NoFaceError


def _random_template(engine, seed=0):
    v = np.random.default_rng(seed).normal(size=128)
    return matcher.Template(v / np.linalg.norm(v), model=engine.model, model_hash=engine.model_hash)


def test_default_pipeline_is_calibrated_at_the_standard_points(engine):
    assert set(engine.operating_points) == {1e-2, 1e-3, 1e-4, 1e-5}
    t = [engine.operating_points[f] for f in (1e-2, 1e-3, 1e-4, 1e-5)]
    assert t == sorted(t) and 0 < t[0] < t[-1] < 1  # stricter FMR, higher threshold
    record = load_card("sface-2021dec").extra["calibration"][engine.model_hash]
    assert record["impostor_comparisons"] > 10_000_000 and record["date"]


def test_verify_same_face_matches_with_a_stated_operating_point(engine, astronaut_bgr):
    rot = cv2.warpAffine(astronaut_bgr, cv2.getRotationMatrix2D((256, 256), 8, 1.0), (512, 512))
    d = engine.verify(astronaut_bgr, rot, fmr=1e-4)
    assert isinstance(d, Decision) and d.match and bool(d)
    assert d.threshold == engine.operating_points[1e-4] and d.fmr == 1e-4
    assert d.model == "sface-2021dec" and d.score >= d.threshold
    ref = engine.template(astronaut_bgr)
    d2 = engine.verify(rot, ref, fmr=1e-3)  # image against template
    assert d2.match and d2.score == pytest.approx(d.score, abs=1e-6)


def test_verify_unrelated_template_does_not_match(engine, astronaut_bgr):
    ref = engine.template(astronaut_bgr)
    d = engine.verify(ref, _random_template(engine), fmr=1e-2)
    assert not d.match and d.score < d.threshold


def test_verify_errors_are_typed(engine, astronaut_bgr):
    ref = engine.template(astronaut_bgr)
    with pytest.raises(CalibrationError, match="calibrated: 1e-05, 0.0001, 0.001, 0.01"):
        engine.verify(ref, ref, fmr=0.05)
    other_hash = matcher.Template(ref.vector, model=ref.model, model_hash="f" * 16)
    with pytest.raises(ModelMismatchError):
        engine.verify(ref, other_hash)
    with pytest.raises(ModelMismatchError):
        engine.verify(other_hash, ref)
    with pytest.raises(NoFaceError):
        engine.verify(np.full((100, 100, 3), 127, np.uint8), ref)


def test_flip_pipeline_has_its_own_identity(engine):
    eng = matcher.Engine(flip=True, threads=1)
    assert eng.model_hash != engine.model_hash
    if not eng.operating_points:
        with pytest.raises(CalibrationError):
            eng.verify(_random_template(eng), _random_template(eng, 1))


def test_threshold_lookup_and_card_writing(tmp_path):
    assert lookup({1e-3: 0.4}, 0.001, "m") == 0.4
    assert lookup({1e-3: 0.4}, 1e-3 * (1 + 1e-12), "m") == 0.4
    with pytest.raises(CalibrationError):
        lookup({}, 1e-3, "m")
    card = tmp_path / "card.json"
    card.write_text('{"id": "x"}')
    write_into_card(card, "abcd", {"fmr_thresholds": {"1e-03": 0.5}})
    assert json.loads(card.read_text())["calibration"]["abcd"]["fmr_thresholds"] == {"1e-03": 0.5}


def test_cli_verify_exit_codes(tmp_path, astronaut_bgr):
    a = tmp_path / "a.png"
    b = tmp_path / "b.jpg"
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(a), astronaut_bgr)
    cv2.imwrite(str(b), cv2.resize(astronaut_bgr, (300, 300)))
    cv2.imwrite(str(blank), np.full((80, 80, 3), 127, np.uint8))
    runner = CliRunner()
    r = runner.invoke(main, ["verify", str(a), str(b), "--json", "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert '"match": true' in r.output
    r = runner.invoke(main, ["verify", str(a), str(blank), "--threads", "1"])
    assert r.exit_code == 2 and "NoFaceError" in r.output
    r = runner.invoke(main, ["verify", str(a), str(tmp_path / "missing.jpg")])
    assert r.exit_code == 2
    r = runner.invoke(main, ["verify", str(a), str(b), "--fmr", "0.3", "--threads", "1"])
    assert r.exit_code == 2 and "CalibrationError" in r.output


def test_cli_verify_templates_and_sealed_blobs(tmp_path, engine, astronaut_bgr):
    from datetime import datetime, timedelta, timezone

    img = tmp_path / "live.png"
    cv2.imwrite(str(img), astronaut_bgr)
    ref = engine.template(astronaut_bgr)
    (tmp_path / "ref.tpl").write_bytes(ref.to_bytes("int8"))
    (tmp_path / "other.tpl").write_bytes(_random_template(engine, 5).to_bytes())
    key = bytes(range(32))
    (tmp_path / "key").write_bytes(key)
    later = datetime.now(timezone.utc) + timedelta(days=1)
    (tmp_path / "card.bin").write_bytes(matcher.seal(ref, key, expires_at=later, issuer="TEST"))
    (tmp_path / "qr.txt").write_text(matcher.seal_text(ref, key, expires_at=later))
    runner = CliRunner()
    base = ["verify", str(img)]
    assert runner.invoke(main, base + [str(tmp_path / "ref.tpl"), "--threads", "1"]).exit_code == 0
    r = runner.invoke(main, base + [str(tmp_path / "other.tpl"), "--json", "--threads", "1"])
    assert r.exit_code == 1 and json.loads(r.output)["match"] is False
    for sealed in ("card.bin", "qr.txt"):
        r = runner.invoke(main, base + [str(tmp_path / sealed), "--key-file", str(tmp_path / "key"),
                                        "--threads", "1"])
        assert r.exit_code == 0, r.output
    r = runner.invoke(main, base + [str(tmp_path / "card.bin"), "--threads", "1"])
    assert r.exit_code == 2 and "--key-file" in r.output
    (tmp_path / "wrong").write_bytes(bytes(32))
    r = runner.invoke(main, base + [str(tmp_path / "card.bin"), "--key-file", str(tmp_path / "wrong")])
    assert r.exit_code == 2 and "WrongKeyError" in r.output
