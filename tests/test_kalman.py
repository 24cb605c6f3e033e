"""Property tests of the Kalman math against a straightforward numpy implementation (I4, F4)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from weightstream import kalman

SETTINGS = settings(max_examples=100, deadline=None)

DAY = 86_400.0
CENTURY_DAYS = 100 * 365.25

weights = st.floats(20.0, 500.0, allow_nan=False, allow_infinity=False)
trends = st.floats(-2.0, 2.0, allow_nan=False, allow_infinity=False)
# Gaps from 0 s to 100 years, expressed in days (the filter's unit).
gap_seconds = st.one_of(
    st.just(0.0),
    st.floats(0.0, 3_600.0),
    st.floats(0.0, 90 * DAY),
    st.floats(0.0, CENTURY_DAYS * DAY),
    st.just(CENTURY_DAYS * DAY),
)
weight_vars = st.floats(1e-4, 100.0)
trend_vars = st.floats(1e-8, 1.0)
correlations = st.floats(-0.95, 0.95)
q_weights = st.floats(1e-4, 1.0)
q_trends = st.floats(1e-8, 1e-2)
measurement_vars = st.floats(1e-2, 25.0)


@st.composite
def covariances(draw: st.DrawFn) -> kalman.Mat:
    """A symmetric positive-definite 2x2 covariance built from variances and a correlation."""
    v0 = draw(weight_vars)
    v1 = draw(trend_vars)
    rho = draw(correlations)
    c = rho * math.sqrt(v0 * v1)
    return ((v0, c), (c, v1))


# -- the reference: plain matrices, no cleverness ---------------------------------------------


def ref_predict(x, P, dt, qw, qt):  # type: ignore[no-untyped-def]
    F = np.array([[1.0, dt], [0.0, 1.0]])
    Q = qw * np.array([[dt, 0.0], [0.0, 0.0]]) + qt * np.array(
        [[dt**3 / 3.0, dt**2 / 2.0], [dt**2 / 2.0, dt]]
    )
    xp = F @ np.asarray(x, dtype=float)
    Pp = F @ np.asarray(P, dtype=float) @ F.T + Q
    return xp, Pp


def ref_update(x, P, z, r):  # type: ignore[no-untyped-def]
    x = np.asarray(x, dtype=float)
    P = np.asarray(P, dtype=float)
    H = np.array([[1.0, 0.0]])
    S = (H @ P @ H.T)[0, 0] + r
    K = (P @ H.T) / S
    y = z - (H @ x)[0]
    xn = x + K[:, 0] * y
    A = np.eye(2) - K @ H
    Pn = A @ P @ A.T + r * (K @ K.T)
    Pn = 0.5 * (Pn + Pn.T)
    return xn, Pn, y, S


def assert_close(actual, expected, rel: float = 1e-9) -> None:  # type: ignore[no-untyped-def]
    """Element-wise equal to ``rel`` relative to the array's scale (tiny entries near zero)."""
    a = np.asarray(actual, dtype=float)
    e = np.asarray(expected, dtype=float)
    scale = max(float(np.max(np.abs(e))), 1e-300)
    np.testing.assert_allclose(a, e, rtol=rel, atol=rel * scale)


def assert_valid_covariance(P: kalman.Mat) -> None:
    """P finite, exactly symmetric and positive definite (I4)."""
    (p00, p01), (p10, p11) = P
    assert all(math.isfinite(v) for v in (p00, p01, p10, p11)), P
    assert p01 == p10, P
    assert p00 > 0 and p11 > 0, P
    assert np.all(np.linalg.eigvalsh(np.array(P)) > 0), P


# -- properties -------------------------------------------------------------------------------


@SETTINGS
@given(weights, trends, covariances(), gap_seconds, q_weights, q_trends, weights, measurement_vars)
def test_predict_update_keep_state_valid(w, v, P, gap_s, qw, qt, z, r):
    """After predict and update, x is finite and P finite, symmetric and positive definite."""
    x, Pp = kalman.predict((w, v), P, gap_s / DAY, qw, qt)
    assert all(math.isfinite(c) for c in x)
    assert np.all(np.isfinite(np.array(Pp)))
    assert_valid_covariance(((Pp[0][0], Pp[0][1]), (Pp[0][1], Pp[1][1])))
    u = kalman.update(x, Pp, z, r)
    assert all(math.isfinite(c) for c in u.x)
    assert math.isfinite(u.innovation) and u.innovation_var > 0
    assert_valid_covariance(u.P)


@SETTINGS
@given(weights, trends, covariances(), gap_seconds, q_weights, q_trends, weights, measurement_vars)
def test_posterior_weight_between_prior_and_measurement(w, v, P, gap_s, qw, qt, z, r):
    """The updated weight lies between the predicted weight and the reading, and not past it."""
    x, Pp = kalman.predict((w, v), P, gap_s / DAY, qw, qt)
    post = kalman.update(x, Pp, z, r).x[0]
    lo, hi = min(x[0], z), max(x[0], z)
    slack = 1e-12 * max(abs(lo), abs(hi))
    assert lo - slack <= post <= hi + slack
    # Strictly closer to the prediction than the reading is (R > 0 means K0 < 1).
    assert abs(post - x[0]) <= abs(z - x[0])


@SETTINGS
@given(weights, trends, covariances(), gap_seconds, q_weights, q_trends)
def test_predict_matches_matrix_reference(w, v, P, gap_s, qw, qt):
    """predict equals x' = F x, P' = F P F^T + Q computed with numpy matrices, to 1e-9."""
    dt = gap_s / DAY
    x, Pp = kalman.predict((w, v), P, dt, qw, qt)
    rx, rP = ref_predict((w, v), P, dt, qw, qt)
    assert_close(x, rx)
    assert_close(Pp, rP)


@SETTINGS
@given(weights, trends, covariances(), gap_seconds, q_weights, q_trends, weights, measurement_vars)
def test_update_matches_joseph_form_reference(w, v, P, gap_s, qw, qt, z, r):
    """update equals the Joseph-form update computed with numpy matrices, to 1e-9."""
    x, Pp = kalman.predict((w, v), P, gap_s / DAY, qw, qt)
    u = kalman.update(x, Pp, z, r)
    rx, rP, ry, rS = ref_update(x, Pp, z, r)
    assert_close(u.x, rx)
    assert_close(u.P, rP)
    assert_close([u.innovation], [ry])
    assert_close([u.innovation_var], [rS])


@SETTINGS
@given(
    st.floats(0.0, CENTURY_DAYS),
    st.floats(1e-6, 30.0),
    q_weights,
    q_trends,
)
def test_process_noise_grows_with_dt(dt, extra, qw, qt):
    """Q(dt) is PSD and grows with dt: Q(dt + e) - Q(dt) is positive semi-definite, diagonal up."""
    q1 = np.array(kalman.process_noise(dt, qw, qt))
    q2 = np.array(kalman.process_noise(dt + extra, qw, qt))
    assert q2[0, 0] > q1[0, 0]
    assert q2[1, 1] > q1[1, 1]
    scale = max(float(np.max(np.abs(q2))), 1e-300)
    assert np.all(np.linalg.eigvalsh(q2 - q1) >= -1e-9 * scale)
    assert np.all(np.linalg.eigvalsh(q1) >= -1e-12 * max(float(np.max(np.abs(q1))), 1e-300))


def test_process_noise_examples():
    """process_noise gives the closed forms: level walk q_w*dt, trend integrated dt^3/3, dt^2/2."""
    assert kalman.process_noise(2.0, 0.1, 0.0) == ((0.2, 0.0), (0.0, 0.0))
    assert kalman.process_noise(0.0, 0.1, 0.3) == ((0.0, 0.0), (0.0, 0.0))
    q = kalman.process_noise(3.0, 0.0, 1.0)
    assert q == ((9.0, 4.5), (4.5, 3.0))
    q = kalman.process_noise(1.0, 0.02, 2e-5)
    assert math.isclose(q[0][0], 0.02 + 2e-5 / 3.0, rel_tol=1e-15)
    assert q[0][1] == q[1][0] == 1e-5
    assert q[1][1] == 2e-5


def test_predict_and_update_examples():
    """The docstring examples hold: a trend carries the level, and equal variances average."""
    assert kalman.predict((80.0, -0.1), ((1.0, 0.0), (0.0, 0.0)), 10.0, 0.0, 0.0) == (
        (79.0, -0.1),
        ((1.0, 0.0), (0.0, 0.0)),
    )
    u = kalman.update((80.0, 0.0), ((1.0, 0.0), (0.0, 1.0)), 82.0, 1.0)
    assert (u.x, u.innovation, u.innovation_var) == ((81.0, 0.0), 2.0, 2.0)
    assert u.P == ((0.5, 0.0), (0.0, 1.0))


def test_zero_gap_predict_is_identity():
    """A zero gap leaves state and covariance exactly as they were (no noise added)."""
    P = ((0.7, 0.01), (0.01, 0.002))
    assert kalman.predict((81.5, 0.05), P, 0.0, 0.02, 2e-5) == ((81.5, 0.05), P)


def test_transition_matrix():
    """F(dt) is [[1, dt], [0, 1]]."""
    assert kalman.transition(2.5) == ((1.0, 2.5), (0.0, 1.0))


def test_century_gap_stays_finite():
    """F4: a 100-year gap with the largest sane noises gives finite, valid numbers (no overflow)."""
    P = ((100.0, 0.0), (0.0, 1.0))
    x, Pp = kalman.predict((500.0, 2.0), P, CENTURY_DAYS, 1.0, 1e-2)
    assert all(math.isfinite(v) for v in x)
    assert all(math.isfinite(v) for row in Pp for v in row)
    u = kalman.update(x, Pp, 20.0, 0.01)
    assert all(math.isfinite(v) for v in u.x)
    assert_valid_covariance(u.P)
    # With that much uncertainty the reading dominates.
    assert abs(u.x[0] - 20.0) < 1.0


@SETTINGS
@given(covariances(), q_weights, q_trends, st.lists(st.tuples(gap_seconds, weights), max_size=30))
def test_long_sequences_stay_valid(P, qw, qt, steps):
    """Any sequence of predict/update steps keeps P symmetric positive definite."""
    x: kalman.Vec = (80.0, 0.0)
    for gap_s, z in steps:
        x, P = kalman.predict(x, P, gap_s / DAY, qw, qt)
        u = kalman.update(x, P, z, 0.64)
        x, P = u.x, u.P
        assert_valid_covariance(P)
        assert all(math.isfinite(v) for v in x)
