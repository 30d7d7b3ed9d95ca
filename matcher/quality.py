"""Face image quality: named components, a unified 0..100 score, and pass/fail policies.

Components (``Quality.components[name].value``), all measured on the primary face:

========================  =============================================================  ==========
name                      what                                                           unit
========================  =============================================================  ==========
``face_size``             inter-eye distance in the frame (centre of the eye landmarks)  pixels
``sharpness``             variance of the 4-neighbour Laplacian of the grey aligned       grey level²
                          112x112 crop, over the inner face region (native ``crop_stats``)
``yaw``                   head turn left/right estimated from the 5 landmarks, + when     degrees
                          the nose points to the image's right                          (approx.)
``pitch``                 head tilt up/down, + when the chin is up (nose nearer the       degrees
                          eye line)                                                      (approx.)
``roll``                  in-plane tilt: angle of the eye line, + clockwise on screen     degrees
                          (the subject's left eye lower than the right)
``brightness``            mean grey level of the inner face region of the aligned crop  0..255
``contrast``              standard deviation of that grey level                          0..255
``confidence``            the detector's score for the face                             0..1
``other_faces``           other faces whose inter-eye distance is at least               count
                          ``other_face_fraction`` of the primary face's
========================  =============================================================  ==========

Grey is ITU-R BT.601 luma (0.299 R + 0.587 G + 0.114 B) of the crop the recogniser sees. The inner
face region (``ROI``) spans the eyebrows to below the mouth and cheek to cheek on the alignment
template, so background, hair and the zero padding of faces at the frame edge do not count.

Pose from the 5 landmarks (right eye ``re``, left eye ``le``, nose ``n``, mouth corners), after
rotating them by ``-roll`` about the eye midpoint ``E`` so the eye line is horizontal; ``M`` is the
mouth midpoint, ``d`` the inter-eye distance, ``h = M.y - E.y`` the eye-to-mouth height:

- ``roll  = atan2(le.y - re.y, le.x - re.x)``
- ``yaw   = atan(o / (K_YAW * d))`` with ``o`` the nose's horizontal offset from the line ``E -> M``
  at the nose's height. Model: the nose tip stands ``K_YAW * IPD`` in front of the (flat)
  eye/mouth plane, so turning by θ moves it by ``K_YAW * IPD * sin θ`` while ``d`` shrinks to
  ``IPD * cos θ``.
- ``pitch = atan((t0 - t) * h / (K_PITCH * h0))`` with ``t = (n.y - E.y) / h`` the nose's relative
  height between eye line and mouth line, ``t0`` its frontal value, same flat-face model: tilting
  by φ moves the nose ``K_PITCH * h0 * sin φ`` up while ``h`` shrinks to ``h0 cos φ``.

The constants (``POSE_MODEL``) are approximate anthropometric values; the angles are good to
roughly ±5-10° near frontal and saturate for strong poses (landmarks of profile faces are
guesses). They rank and gate images; they are not a head-pose measurement instrument.

Unified score: ``100 * prod(d_i)`` over the per-component desirabilities ``d_i`` in [0, 1]: each
is a piecewise-linear ramp between a value where the component starts to cost accuracy
(``d = 1``) and one where matching fails badly (``d = 0``); the ramps are the card's
``quality_scoring`` section. A product so that one bad component cannot be averaged away.

Policies (``"enrol"`` strict, ``"probe"`` lenient) are thresholds on the components (plus an
optional ``min_score``), stored in the recogniser's model card under ``quality_policies``; any key
can be overridden per call or per engine. A ``None`` threshold disables that check.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from matcher import _native
from matcher.errors import InputError
from matcher.types import Face

#: Inner face region of the 112x112 aligned crop, (x0, y0, x1, y1): eyes sit at y ~ 52, x ~ 38 and
#: 74, the mouth corners at y ~ 92 on the alignment template.
ROI = (24, 32, 88, 104)

#: Flat-face pose model: nose-tip protrusion in front of the eye/mouth plane as a fraction of the
#: inter-eye distance (yaw) and of the eye-to-mouth height (pitch), and the nose's frontal relative
#: height between the eye line and the mouth line (``t0``: 0.557 is the median over lfw-dev with
#: YuNet's landmarks, whose nose point sits lower than the ArcFace template's 0.495).
POSE_MODEL = {"k_yaw": 0.5, "k_pitch": 0.45, "t0": 0.557}

#: Component names, in the order a gate should report their failures (first = spoken).
COMPONENTS = ("other_faces", "face_size", "yaw", "pitch", "roll", "brightness", "contrast",
              "sharpness", "confidence")

UNITS = {"face_size": "px (inter-eye distance)", "sharpness": "grey level^2 (Laplacian variance)",
         "yaw": "degrees (approx.)", "pitch": "degrees (approx.)", "roll": "degrees",
         "brightness": "grey level 0..255 (mean)", "contrast": "grey level 0..255 (std)",
         "confidence": "detector score 0..1", "other_faces": "count"}

#: What a gate shows or says for each failure.
ADVICE = {"other_faces": "one person at a time", "face_size": "move closer",
          "yaw": "look at the camera", "pitch": "look at the camera",
          "roll": "look at the camera", "too_dark": "too dark", "too_bright": "too bright",
          "contrast": "too dark", "sharpness": "hold still", "confidence": "look at the camera"}

#: Policy keys and the component each one gates.
POLICY_KEYS = {"min_inter_eye_px": "face_size", "min_sharpness": "sharpness",
               "max_abs_yaw": "yaw", "max_abs_pitch": "pitch", "max_abs_roll": "roll",
               "min_brightness": "brightness", "max_brightness": "brightness",
               "min_contrast": "contrast", "min_confidence": "confidence",
               "max_other_faces": "other_faces", "other_face_fraction": "other_faces",
               "min_score": None}


# ------------------------------------------------------------------------------------------------
# Measurements


def pose_from_landmarks(landmarks: np.ndarray) -> tuple[float, float, float]:
    """``(yaw, pitch, roll)`` in degrees (approximate) from 5 landmarks; see the module docs."""
    p = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    re, le = p[0], p[1]
    roll = math.degrees(math.atan2(le[1] - re[1], le[0] - re[0]))
    e = (re + le) / 2
    c, s = math.cos(math.radians(-roll)), math.sin(math.radians(-roll))
    rot = np.array([[c, -s], [s, c]])
    q = (p - e) @ rot.T  # eye line horizontal, eye midpoint at the origin
    d = float(np.hypot(*(q[1] - q[0])))
    m = (q[3] + q[4]) / 2
    h = float(m[1])
    if d <= 1e-6 or h <= 1e-6:  # degenerate (mouth above the eyes): call it an extreme pose
        return 90.0, 90.0, roll
    t = float(q[2][1]) / h
    mid_x = t * float(m[0])  # the E -> M line at the nose's height
    yaw = math.degrees(math.atan((float(q[2][0]) - mid_x) / (POSE_MODEL["k_yaw"] * d)))
    # h0: the frontal eye-to-mouth height, estimated from d (template ratio 40.7 / 35.2).
    h0 = 1.156 * d
    pitch = math.degrees(math.atan((POSE_MODEL["t0"] - t) * h / (POSE_MODEL["k_pitch"] * h0)))
    return yaw, pitch, roll


def count_other_faces(face: Face, faces: Sequence[Face], fraction: float) -> int:
    """Faces other than ``face`` whose inter-eye distance is >= ``fraction`` of ``face``'s."""
    ref = face.inter_eye_distance
    return sum(1 for f in faces if f is not face and f.inter_eye_distance >= fraction * ref)


def crop_statistics(batch: np.ndarray, offset: int = 0, count: int = -1, *,
                    rgb: bool = True) -> np.ndarray:
    """``(count, 3)`` float64 (Laplacian variance, mean grey, std grey) of aligned crops over the
    inner face region (native kernel)."""
    h, w = batch.shape[2], batch.shape[3]
    sx, sy = w / 112.0, h / 112.0
    roi = (int(ROI[0] * sx), int(ROI[1] * sy), round(ROI[2] * sx), round(ROI[3] * sy))
    return _native.crop_stats(batch, offset, count, roi, rgb)


def measure(face: Face, faces: Sequence[Face], stats: Sequence[float],
            other_face_fraction: float = 0.5) -> dict[str, float]:
    """Raw component values of ``face`` (one of ``faces``), with its crop ``stats``."""
    yaw, pitch, roll = pose_from_landmarks(face.landmarks)
    return {"face_size": face.inter_eye_distance, "sharpness": float(stats[0]),
            "yaw": yaw, "pitch": pitch, "roll": roll, "brightness": float(stats[1]),
            "contrast": float(stats[2]), "confidence": float(face.score),
            "other_faces": float(count_other_faces(face, faces, other_face_fraction))}


# ------------------------------------------------------------------------------------------------
# Scoring and policies


def _ramp(x: float, zero: float, one: float) -> float:
    """Linear from 0 at ``zero`` to 1 at ``one`` (either direction), clamped."""
    if one == zero:
        return 1.0 if x >= one else 0.0
    return float(min(1.0, max(0.0, (x - zero) / (one - zero))))


def desirability(name: str, value: float, scoring: Mapping[str, Any]) -> float:
    """Desirability in [0, 1] of one component value under the card's ``quality_scoring``."""
    r = scoring[name]
    if name in ("yaw", "pitch", "roll"):
        return _ramp(abs(value), r[1], r[0])  # [ok up to, zero at]
    if name == "brightness":  # [zero below, ok from, ok up to, zero above]
        return min(_ramp(value, r[0], r[1]), _ramp(value, r[3], r[2]))
    if name == "other_faces":
        return float(r[0]) ** value  # each extra face multiplies by r[0]
    if name == "sharpness":  # ramp in log10: blur is multiplicative
        return _ramp(math.log10(max(value, 1e-9)), math.log10(r[0]), math.log10(r[1]))
    return _ramp(value, r[0], r[1])


@dataclass(frozen=True)
class Component:
    """One quality component: its value, unit, desirability and, under a policy, its verdict."""

    name: str
    value: float
    unit: str
    desirability: float
    passed: bool = True
    reason: str | None = None   #: why it failed, technically ("inter-eye distance 18 px < 24")
    advice: str | None = None   #: what to tell the traveller ("move closer")


@dataclass(frozen=True)
class Quality:
    """Quality of one face image: components, unified score 0..100, verdict under a policy."""

    components: dict[str, Component]
    score: float
    policy: str | None
    passed: bool
    face: Face | None = field(default=None, repr=False, compare=False)
    score_reason: str | None = None

    def __getitem__(self, name: str) -> float:
        return self.components[name].value

    @property
    def failures(self) -> list[Component]:
        """Failed components, most important (the one to say first) first."""
        return [self.components[n] for n in COMPONENTS if not self.components[n].passed]

    @property
    def reasons(self) -> list[str]:
        """Technical reasons of every failure."""
        out = [c.reason for c in self.failures if c.reason]
        if self.score_reason:
            out.append(self.score_reason)
        return out

    @property
    def advice(self) -> str | None:
        """Short human-readable instruction for the first failure ("move closer"), or None."""
        for c in self.failures:
            return c.advice
        return None if self.passed else "look at the camera"

    def as_dict(self) -> dict[str, Any]:
        return {"score": round(self.score, 2), "policy": self.policy, "passed": self.passed,
                "advice": self.advice, "reasons": self.reasons,
                "components": {n: {"value": round(c.value, 4), "unit": c.unit,
                                   "desirability": round(c.desirability, 4), "passed": c.passed}
                               for n, c in self.components.items()}}


def resolve_policy(policy: str | Mapping[str, Any] | None,
                   policies: Mapping[str, Mapping[str, Any]]) -> tuple[str | None, dict[str, Any]]:
    """``(name, thresholds)`` of ``policy``: a name from ``policies``, a mapping (``"base"``: name
    of the policy it overrides, default ``"probe"``; other keys: thresholds), or None (no checks)."""
    if policy is None:
        return None, {}
    if isinstance(policy, str):
        if policy not in policies:
            raise InputError(f"unknown quality policy {policy!r}; known: {', '.join(policies)}")
        return policy, dict(policies[policy])
    if isinstance(policy, Mapping):
        base = policy.get("base", "probe")
        name, out = resolve_policy(base, policies) if base is not None else ("custom", {})
        unknown = set(policy) - set(POLICY_KEYS) - {"base"}
        if unknown:
            raise InputError(f"unknown quality policy keys {sorted(unknown)}; "
                             f"known: {sorted(POLICY_KEYS)}")
        out.update({k: v for k, v in policy.items() if k != "base"})
        return f"{name}+custom", out
    raise InputError(f"quality policy must be a name, a mapping or None, got {policy!r}")


def merge_policies(card_policies: Mapping[str, Any],
                   overrides: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """The card's policies with ``overrides`` (per policy name, per key) applied; new names allowed."""
    out = {k: dict(v) for k, v in card_policies.items() if isinstance(v, Mapping)}
    for name, over in (overrides or {}).items():
        if not isinstance(over, Mapping):
            raise InputError(f"quality_policies[{name!r}] must be a mapping of thresholds")
        unknown = set(over) - set(POLICY_KEYS)
        if unknown:
            raise InputError(f"unknown quality policy keys {sorted(unknown)}")
        out.setdefault(name, {}).update(over)
    return out


def assess(values: Mapping[str, float], scoring: Mapping[str, Any], policy_name: str | None,
           policy: Mapping[str, Any], face: Face | None = None) -> Quality:
    """Build a :class:`Quality` from raw component ``values`` under ``policy``."""
    fails: dict[str, tuple[str, str]] = {}

    def check(key: str, bad: bool, reason: str, advice_key: str | None = None) -> None:
        comp = POLICY_KEYS[key]
        if bad and comp not in fails:
            fails[comp] = (reason, ADVICE[advice_key or comp])

    def lim(key: str) -> float | None:
        v = policy.get(key)
        return None if v is None else float(v)

    v = values
    if (t := lim("max_other_faces")) is not None:
        check("max_other_faces", v["other_faces"] > t,
              f"{int(v['other_faces'])} other face(s) in frame (at most {t:g} allowed)")
    if (t := lim("min_inter_eye_px")) is not None:
        check("min_inter_eye_px", v["face_size"] < t,
              f"inter-eye distance {v['face_size']:.1f} px < {t:g} px")
    for ang in ("yaw", "pitch", "roll"):
        if (t := lim(f"max_abs_{ang}")) is not None:
            check(f"max_abs_{ang}", abs(v[ang]) > t, f"|{ang}| {abs(v[ang]):.1f}° > {t:g}°")
    if (t := lim("min_brightness")) is not None:
        check("min_brightness", v["brightness"] < t,
              f"brightness {v['brightness']:.1f} < {t:g}", "too_dark")
    if (t := lim("max_brightness")) is not None:
        check("max_brightness", v["brightness"] > t,
              f"brightness {v['brightness']:.1f} > {t:g}", "too_bright")
    if (t := lim("min_contrast")) is not None:
        check("min_contrast", v["contrast"] < t, f"contrast {v['contrast']:.1f} < {t:g}")
    if (t := lim("min_sharpness")) is not None:
        check("min_sharpness", v["sharpness"] < t, f"sharpness {v['sharpness']:.1f} < {t:g}")
    if (t := lim("min_confidence")) is not None:
        check("min_confidence", v["confidence"] < t,
              f"detector confidence {v['confidence']:.3f} < {t:g}")

    comps = {}
    for name in COMPONENTS:
        reason, advice = fails.get(name, (None, None))
        comps[name] = Component(name, float(v[name]), UNITS[name],
                                desirability(name, float(v[name]), scoring),
                                passed=name not in fails, reason=reason, advice=advice)
    score = 100.0 * float(np.prod([c.desirability for c in comps.values()]))
    score_reason = None
    if (t := lim("min_score")) is not None and score < t:
        score_reason = f"quality score {score:.1f} < {t:g}"
    return Quality(comps, score, policy_name, not fails and score_reason is None, face,
                   score_reason)
