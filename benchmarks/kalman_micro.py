"""Plain-float 2x2 Kalman step (weightstream.kalman) against the same step in numpy.

Run by hand: ``.venv/bin/python benchmarks/kalman_micro.py``. Prints microseconds per
predict+update for both, and checks they agree to 1e-9.
"""

from __future__ import annotations

import timeit

import numpy as np

from weightstream import kalman


def numpy_step(
    x: np.ndarray, P: np.ndarray, dt: float, qw: float, qt: float, z: float, r: float
) -> tuple[np.ndarray, np.ndarray]:
    F = np.array([[1.0, dt], [0.0, 1.0]])
    Q = qw * np.array([[dt, 0.0], [0.0, 0.0]]) + qt * np.array(
        [[dt**3 / 3, dt**2 / 2], [dt**2 / 2, dt]]
    )
    H = np.array([[1.0, 0.0]])
    x = F @ x
    P = F @ P @ F.T + Q
    S = H @ P @ H.T + r
    K = P @ H.T / S
    x = x + (K * (z - H @ x)).ravel()
    IKH = np.eye(2) - K @ H
    P = IKH @ P @ IKH.T + K @ K.T * r
    return x, (P + P.T) / 2


def float_step(
    x: kalman.Vec, P: kalman.Mat, dt: float, qw: float, qt: float, z: float, r: float
) -> tuple[kalman.Vec, kalman.Mat]:
    xp, Pp = kalman.predict(x, P, dt, qw, qt)
    u = kalman.update(xp, Pp, z, r)
    return u.x, u.P


def main() -> None:
    args = (1.3, 0.02, 5e-5, 79.4, 0.64)
    x0, P0 = (80.0, -0.1), ((0.5, 0.01), (0.01, 0.003))
    xf, Pf = float_step(x0, P0, *args)
    xn, Pn = numpy_step(np.array(x0), np.array(P0), *args)
    assert np.allclose(xf, xn, rtol=1e-9) and np.allclose(Pf, Pn, rtol=1e-9)
    n = 100_000
    t_float = min(timeit.repeat(lambda: float_step(x0, P0, *args), number=n, repeat=5)) / n
    x_np, P_np = np.array(x0), np.array(P0)
    t_numpy = min(
        timeit.repeat(lambda: numpy_step(x_np, P_np, *args), number=n // 10, repeat=5)
    ) / (n // 10)
    print(f"plain floats: {t_float * 1e6:.2f} us per predict+update")
    print(f"numpy 2x2:    {t_numpy * 1e6:.2f} us per predict+update")
    print(f"floats are {t_numpy / t_float:.1f}x faster")


if __name__ == "__main__":
    main()
