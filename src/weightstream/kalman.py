"""The Kalman filter's math: pure functions over floats.

Model (a local linear trend, continuous-time white-noise on level and trend)::

    state       x = [w, v]          weight (kg), trend (kg/day)
    transition  F(dt) = [[1, dt],
                         [0,  1]]   dt in days since the state's time
    process     Q(dt) = q_w * [[dt, 0], [0, 0]]
                      + q_v * [[dt^3/3, dt^2/2], [dt^2/2, dt]]
    observation H = [1, 0],   R = r (kg^2)

so the uncertainty added between two readings grows with the time between them: a level
random walk of ``q_w`` kg^2/day plus a trend random walk of ``q_v`` (kg/day)^2/day integrated
into the level. The update uses the Joseph form, ``P+ = (I-KH) P (I-KH)^T + K R K^T``, which
keeps P positive definite under rounding, then symmetrises.

Plain floats on a 2x2 are ~18x faster than numpy here (3.6 vs 67 us per predict+update,
``benchmarks/kalman_micro.py``);
``tests/test_kalman.py`` checks these functions against a straightforward numpy matrix
implementation to 1e-9. No I/O, no clock, no logging.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Vec", "Mat", "Update", "predict", "update", "transition", "process_noise"]

Vec = tuple[float, float]
Mat = tuple[tuple[float, float], tuple[float, float]]


class Update(NamedTuple):
    """Result of a measurement update."""

    x: Vec
    P: Mat
    innovation: float  # y = z - H x
    innovation_var: float  # S = H P H^T + R


def transition(dt: float) -> Mat:
    """F(dt) for a gap of ``dt`` days."""
    return ((1.0, dt), (0.0, 1.0))


def process_noise(dt: float, q_weight: float, q_trend: float) -> Mat:
    """Q(dt), the covariance added over ``dt`` days.

    >>> process_noise(2.0, 0.1, 0.0)
    ((0.2, 0.0), (0.0, 0.0))
    """
    q01 = q_trend * dt * dt / 2.0
    return ((q_weight * dt + q_trend * dt * dt * dt / 3.0, q01), (q01, q_trend * dt))


def predict(x: Vec, P: Mat, dt: float, q_weight: float, q_trend: float) -> tuple[Vec, Mat]:
    """Propagate the state ``dt`` days ahead: x' = F x, P' = F P F^T + Q.

    >>> predict((80.0, -0.1), ((1.0, 0.0), (0.0, 0.0)), 10.0, 0.0, 0.0)
    ((79.0, -0.1), ((1.0, 0.0), (0.0, 0.0)))
    """
    w, v = x
    (p00, p01), (p10, p11) = P
    (q00, q01), (q10, q11) = process_noise(dt, q_weight, q_trend)
    # x' = F x
    xp = (w + dt * v, v)
    # P' = F P F^T + Q
    a01 = p01 + dt * p11
    a10 = p10 + dt * p11
    pp00 = p00 + dt * (p01 + p10) + dt * dt * p11 + q00
    return xp, ((pp00, a01 + q01), (a10 + q10, p11 + q11))


def update(x: Vec, P: Mat, z: float, r: float) -> Update:
    """Fold the reading ``z`` (variance ``r``) into the state.

    For the weight, the posterior lies between the prior and the reading (0 <= K0 < 1).

    >>> u = update((80.0, 0.0), ((1.0, 0.0), (0.0, 1.0)), 82.0, 1.0)
    >>> u.x, u.innovation, u.innovation_var
    ((81.0, 0.0), 2.0, 2.0)
    """
    w, v = x
    (p00, p01), (p10, p11) = P
    # y = z - H x ; S = H P H^T + R
    y = z - w
    s = p00 + r
    # K = P H^T S^-1
    k0 = p00 / s
    k1 = p10 / s
    # x+ = x + K y
    xn = (w + k0 * y, v + k1 * y)
    # P+ = (I - K H) P (I - K H)^T + K R K^T   (Joseph form)
    c = 1.0 - k0
    a00 = c * p00
    a01 = c * p01
    a10 = p10 - k1 * p00
    a11 = p11 - k1 * p01
    b00 = a00 * c + k0 * k0 * r
    b01 = a01 - a00 * k1 + k0 * k1 * r
    b10 = a10 * c + k1 * k0 * r
    b11 = a11 - a10 * k1 + k1 * k1 * r
    off = 0.5 * (b01 + b10)
    return Update(xn, ((b00, off), (off, b11)), y, s)
