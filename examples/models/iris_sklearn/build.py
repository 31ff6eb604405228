#!/usr/bin/env python3
"""Build the ``iris_sklearn`` example: a scikit-learn pipeline behind the Python backend.

Trains StandardScaler + LogisticRegression (fixed seed) on scikit-learn's bundled iris data
(no download) and saves it with joblib as ``1/model.joblib`` (generated, gitignored), which
``1/model.py`` loads in ``initialize``.

Usage: python examples/models/iris_sklearn/build.py   (or examples/build.py for every example)
Needs: scikit-learn, joblib (the ``examples`` extra).
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_iris()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data.astype("float32"), data.target, test_size=0.25, random_state=0, stratify=data.target
    )
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=0))
    model.fit(x_train, y_train)
    joblib.dump(model, HERE / "1" / "model.joblib")
    print(f"iris_sklearn: test accuracy {model.score(x_test, y_test):.3f} -> 1/model.joblib")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
