"""The course experiments (examples/experiments/) in their quick configurations.

Each test runs the code that makes the published figures, on tiny data, into
a temporary folder, and checks that the figure and table files appear, that
every number in the results is finite, and, where it costs little, one
property the experiment's claim rests on, computed independently of it.
"""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest


EXPERIMENTS = Path(__file__).resolve().parents[1] / "examples" / "experiments"
sys.path.insert(0, str(EXPERIMENTS))

import batchnorm  # noqa: E402
import depth  # noqa: E402
import nonlinearities  # noqa: E402
import optimizers  # noqa: E402
import other_approaches  # noqa: E402
import regression  # noqa: E402
import weight_decay  # noqa: E402

import graphc as gc  # noqa: E402
from graphc import optim  # noqa: E402
from support import needs_fashion_mnist  # noqa: E402




def numbers(value: Any) -> Iterator[float]:
    """Every int or float inside nested rows (strings such as labels are skipped)."""
    if isinstance(value, (list, tuple)):
        for item in value:
            yield from numbers(item)
    elif isinstance(value, (int, float, np.integer, np.floating)):
        yield float(value)


def assert_outputs(out: Path, *names: str) -> None:
    for name in names:
        path = out / name
        assert path.is_file() and path.stat().st_size > 0, f"{name} was not written"
    tables = [out / n for n in names if n.endswith(".md")]
    for table in tables:
        text = table.read_text()
        assert "|---|" in text and "nan" not in text and "inf" not in text, text


def assert_finite(rows: Any) -> None:
    values = list(numbers(rows))
    assert values, "the rows hold no numbers"
    assert all(math.isfinite(v) for v in values), rows


# ------------------------------------------------------------------ 1. non-linearities

def test_nonlinearities_derivatives_match_the_analytic_ones(tmp_path: Path):
    result = nonlinearities.run(nonlinearities.QUICK, tmp_path)
    assert_outputs(tmp_path, "nonlinearities.png", "nonlinearities.md")
    rows = result["rows"]
    assert_finite([row[2:] for row in rows])
    assert {row[0] for row in rows} == {"tanh", "sigmoid", "relu"}
    for name, dtype, from_analytic, from_interpreter in rows:
        if dtype == "float64":
            assert from_analytic < 1e-6, (name, from_analytic)
        assert from_interpreter < 1e-6, (name, dtype, from_interpreter)


def test_graph_derivative_agrees_with_central_differences():
    """Independent of the analytic formulas the experiment uses: f'(x) ≈ (f(x + h) − f(x − h)) / 2h."""
    x = np.linspace(-3.0, 3.0, 61) + 0.05  # off the ReLU kink
    h = 1e-6
    for name, (f, _) in nonlinearities.NONLINEARITIES.items():
        value, derivative = nonlinearities.derivative_graph(f, "float64")
        (d,) = gc.evaluate([derivative], {"x": x})
        (up,) = gc.evaluate([value], {"x": x + h})
        (down,) = gc.evaluate([value], {"x": x - h})
        np.testing.assert_allclose(d, (up - down) / (2 * h), atol=1e-6, err_msg=name)


def test_an_experiment_runs_from_its_command_line(tmp_path: Path):
    completed = subprocess.run([sys.executable, str(EXPERIMENTS / "nonlinearities.py"), "--quick", "--out",
                                str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert "wall time" in completed.stdout
    assert_outputs(tmp_path, "nonlinearities.png", "nonlinearities.md")


# ------------------------------------------------------------------ 2. batch norm

@needs_fashion_mnist
def test_batchnorm_figure_and_identical_starting_networks(tmp_path: Path):
    result = batchnorm.run(batchnorm.QUICK, tmp_path)
    assert_outputs(tmp_path, "batchnorm_fashion_mnist.png", "batchnorm.md")
    assert_finite([row[2:5] for row in result["rows"]])
    traces = result["traces"]["Fashion-MNIST"]
    plain, normalized = traces["without BN"], traces["with BN"]
    assert plain.steps == normalized.steps and plain.steps[0] == 0
    assert all(0.0 <= a <= 1.0 for a in plain.accuracy + normalized.accuracy)
    # Same initial weights, and fresh running statistics (mean 0, variance 1) make BN the identity
    # at inference, so before training both networks feed their sigmoid the same values.
    np.testing.assert_allclose(plain.percentiles[0], normalized.percentiles[0], rtol=1e-4, atol=1e-5)
    # Without BN, inference and batch statistics are the same network.
    np.testing.assert_array_equal(np.array(plain.percentiles), np.array(plain.batch_percentiles))


# ------------------------------------------------------------------ 3. weight decay

def test_weight_decay_shrinks_the_weights(tmp_path: Path):
    result = weight_decay.run(weight_decay.QUICK, tmp_path)
    assert_outputs(tmp_path, "weight_decay.png", "weight_decay.md")
    rows = result["rows"]
    assert_finite([row[2:] for row in rows])
    strengths = [float(row[0]) for row in rows]
    assert strengths == sorted(strengths) and strengths[0] == 0.0
    assert rows[-1][4] < rows[0][4], "the strongest penalty should leave smaller weights than none"


def test_slide_strengths_keep_their_ratios():
    config = weight_decay.FULL
    plotted = [lam for lam, origin in config.strengths()[:3]]
    assert plotted[0] == 0.0
    assert plotted[2] / plotted[1] == pytest.approx(4000 / 40)


# ------------------------------------------------------------------ 4. optimizers

@needs_fashion_mnist
def test_optimizers_paths_descend_and_mlp_runs_finish(tmp_path: Path):
    result = optimizers.run(optimizers.QUICK, tmp_path)
    assert_outputs(tmp_path, "optimizers_paths.png", "optimizers_fashion_mnist.png", "optimizers.md")
    assert_finite(result["path_rows"])
    assert_finite([row[1:] for row in result["run_rows"]])
    for surface in (optimizers.QUADRATIC, optimizers.ROSENBROCK):
        for name, path in result["paths"][surface.name].items():
            np.testing.assert_array_equal(path[0], surface.start)
            assert surface.f(*path[-1]) < surface.f(*path[0]), (surface.name, name)
    assert all(0.0 <= row[3] <= 1.0 for row in result["run_rows"])


def test_sgd_path_on_the_quadratic_is_the_closed_form():
    """Gradient descent on ½(x² + 50 y²) multiplies x by (1 − η) and y by (1 − 50η) at each step."""
    surface = optimizers.QUADRATIC
    eta, steps = surface.lrs["sgd"], 6
    path = optimizers.trajectory(surface, "sgd", steps)
    k = np.arange(steps + 1)
    expected = np.stack([surface.start[0] * (1 - eta) ** k, surface.start[1] * (1 - 50 * eta) ** k], axis=1)
    np.testing.assert_allclose(path, expected, rtol=1e-12)


def test_full_configuration_trains_every_optimizer():
    assert set(optimizers.FULL.optimizers) == set(optim.BY_NAME)
    assert set(optimizers.PATH_OPTIMIZERS) <= set(optim.BY_NAME)


# ------------------------------------------------------------------ 5. depth

@needs_fashion_mnist
def test_depth_counts_parameters_of_each_network(tmp_path: Path):
    config = depth.QUICK
    result = depth.run(config, tmp_path)
    assert_outputs(tmp_path, "depth.png", "depth.md")
    assert_finite([row[3:] for row in result["rows"]])
    for r in result["results"]:
        w = r.width
        expected = (784 * w + w) + (r.depth - 1) * (w * w + w) + (10 * w + 10)
        assert r.parameters == expected
        assert 0.0 <= r.test_accuracy <= 1.0


# ------------------------------------------------------------------ 6. other approaches

@needs_fashion_mnist
def test_other_approaches_tables_and_mixture_sizes(tmp_path: Path):
    config = other_approaches.QUICK
    result = other_approaches.run(config, tmp_path)
    assert_outputs(tmp_path, "other_approaches_noise.png", "other_approaches.md")
    assert_finite([row[1:] for row in result["curve_rows"]])
    assert_finite([row[2] for row in result["model_rows"]])
    k, w = config.experts, config.expert_width
    member = 784 * w + w + 10 * w + 10
    sizes = {m.name: m.parameters for m in result["models"]}
    moe = next(name for name in sizes if name.startswith("mixture of"))
    assert sizes[moe] == k * member + 784 * k + k
    for m in result["models"]:
        np.testing.assert_allclose(m.probabilities.sum(axis=1), 1.0, rtol=1e-5)


# ------------------------------------------------------------------ 7. regression

def test_regression_tables_and_figure(tmp_path: Path):
    result = regression.run(regression.QUICK, tmp_path)
    assert_outputs(tmp_path, "regression.png", "regression.md")
    assert_finite([row[1:] for row in result["rows"]])
    assert {row[0] for row in result["rows"]} >= {"network", "linear least squares", "repeat last sample"}


def test_least_squares_baseline_recovers_an_affine_map():
    rng = np.random.default_rng(3)
    weights, bias = rng.normal(size=(6, 2)), rng.normal(size=2)
    x_train, x_test = rng.normal(size=(50, 6)), rng.normal(size=(7, 6))
    predictions = regression.least_squares_predictions((x_train, x_train @ weights + bias),
                                                       (x_test, x_test @ weights + bias))
    np.testing.assert_allclose(predictions, x_test @ weights + bias, atol=1e-9)
