"""Tests of the optimizers, their shared options and the registry.

Each optimizer's compiled train step is checked against a plain-NumPy
transcription of its update equations (Ruder 2016 and the papers he cites),
written here in float64 from the equations, one step at a time, on a linear
least-squares problem whose gradient NumPy computes by hand.  The options are
checked against their formulas, the compiled step against the interpreter, and
every optimizer must reduce a small classification loss.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Any, Callable, Optional

import numpy as np
import pytest

import graphc as gc
from graphc.errors import GraphcError
from graphc.optim import BY_NAME, Cosine, Exponential, OptimizerError, StepDecay, flush_denormals, make

NAMES = list(BY_NAME)
STEPS = 6

# ---------------------------------------------------------------- the least-squares problem

DATA_RNG = np.random.default_rng(20160915)
X = DATA_RNG.standard_normal((8, 3))
Y = DATA_RNG.standard_normal((8, 2))
W0 = DATA_RNG.standard_normal((3, 2))
B0 = DATA_RNG.standard_normal(2)
THETA0 = np.concatenate([W0.ravel(), B0])
IS_WEIGHT = np.r_[np.ones(W0.size), np.zeros(B0.size)]


def fixed(value: np.ndarray) -> Callable:
    return lambda rng, shape, dtype: value.astype(dtype)


def linear_step(optimizer: gc.optim.Optimizer, dtype: str = "float64", bias: bool = True) -> Any:
    """A compiled train step for mean over the batch of ‖x W + b − y‖², from W0 and B0."""
    x, y = gc.input("x", (None, 3), dtype), gc.input("y", (None, 2), dtype)
    prediction = x @ gc.param("W", (3, 2), init=fixed(W0), dtype=dtype)
    if bias:
        prediction = prediction + gc.param("b", (2,), init=fixed(B0), dtype=dtype)
    return gc.compile(gc.mse(prediction, y), optimizer=optimizer)


def run(step: Any, dtype: str = "float64") -> Any:
    return step(x=X.astype(dtype), y=Y.astype(dtype))


def theta_of(step: Any) -> np.ndarray:
    values = step.state.values
    return np.concatenate([values["W"].ravel(), values["b"]])


def split(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return theta[:W0.size].reshape(W0.shape), theta[W0.size:]


def numpy_loss(theta: np.ndarray) -> float:
    w, b = split(theta)
    return float(np.mean(np.sum((X @ w + b - Y) ** 2, axis=1)))


def numpy_grad(theta: np.ndarray) -> np.ndarray:
    """∂/∂(W, b) of mean_n Σ_k (x_n W + b − y_n)_k², by hand."""
    w, b = split(theta)
    d_prediction = 2.0 * (X @ w + b - Y) / len(X)
    return np.concatenate([(X.T @ d_prediction).ravel(), d_prediction.sum(axis=0)])


# ---------------------------------------------------------------- the equations, in NumPy
# Each takes θ, g, the step t = 1, 2, ..., a dict of its state (empty at first)
# and its hyperparameters, whose defaults are the papers' (and Ruder's).

def sgd(theta, g, t, s, lr=0.01):
    return theta - lr * g


def momentum(theta, g, t, s, lr=0.01, gamma=0.9):
    s["v"] = gamma * s.get("v", 0.0) + lr * g
    return theta - s["v"]


def nesterov(theta, g, t, s, lr=0.01, gamma=0.9):
    s["v"] = gamma * s.get("v", 0.0) + lr * g
    return theta - (gamma * s["v"] + lr * g)


def adagrad(theta, g, t, s, lr=0.01, eps=1e-8):
    s["G"] = s.get("G", 0.0) + g * g
    return theta - lr / np.sqrt(s["G"] + eps) * g


def adadelta(theta, g, t, s, lr=1.0, rho=0.9, eps=1e-6):
    s["Eg2"] = rho * s.get("Eg2", 0.0) + (1 - rho) * g * g
    delta = -np.sqrt(s.get("Edx2", 0.0) + eps) / np.sqrt(s["Eg2"] + eps) * g
    s["Edx2"] = rho * s.get("Edx2", 0.0) + (1 - rho) * delta * delta
    return theta + lr * delta


def rmsprop(theta, g, t, s, lr=0.001, gamma=0.9, eps=1e-8):
    s["Eg2"] = gamma * s.get("Eg2", 0.0) + (1 - gamma) * g * g
    return theta - lr / np.sqrt(s["Eg2"] + eps) * g


def adam_moments(g, s, beta1, beta2, t):
    s["m"] = beta1 * s.get("m", 0.0) + (1 - beta1) * g
    s["v"] = beta2 * s.get("v", 0.0) + (1 - beta2) * g * g
    return s["m"] / (1 - beta1 ** t), s["v"] / (1 - beta2 ** t)


def adam(theta, g, t, s, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8):
    m_hat, v_hat = adam_moments(g, s, beta1, beta2, t)
    return theta - lr / (np.sqrt(v_hat) + eps) * m_hat


def adamax(theta, g, t, s, lr=0.002, beta1=0.9, beta2=0.999, eps=1e-8):
    s["m"] = beta1 * s.get("m", 0.0) + (1 - beta1) * g
    s["u"] = np.maximum(beta2 * s.get("u", 0.0), np.abs(g))
    return theta - lr / (s["u"] + eps) * s["m"] / (1 - beta1 ** t)


def nadam(theta, g, t, s, lr=0.002, beta1=0.9, beta2=0.999, eps=1e-8):
    m_hat, v_hat = adam_moments(g, s, beta1, beta2, t)
    return theta - lr / (np.sqrt(v_hat) + eps) * (beta1 * m_hat + (1 - beta1) * g / (1 - beta1 ** t))


def amsgrad(theta, g, t, s, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8):
    s["m"] = beta1 * s.get("m", 0.0) + (1 - beta1) * g
    s["v"] = beta2 * s.get("v", 0.0) + (1 - beta2) * g * g
    s["v_hat"] = np.maximum(s.get("v_hat", 0.0), s["v"])
    return theta - lr / (np.sqrt(s["v_hat"]) + eps) * s["m"]


EQUATIONS: dict[str, Callable] = {f.__name__: f for f in (
    sgd, momentum, nesterov, adagrad, adadelta, rmsprop, adam, adamax, nadam, amsgrad)}

# Hyperparameters away from the defaults, so a field wired to the wrong place shows.
CUSTOM: dict[str, dict[str, float]] = {
    "sgd": dict(lr=0.05),
    "momentum": dict(lr=0.05, gamma=0.7),
    "nesterov": dict(lr=0.05, gamma=0.7),
    "adagrad": dict(lr=0.2, eps=1e-3),
    "adadelta": dict(lr=0.7, rho=0.8, eps=1e-3),
    "rmsprop": dict(lr=0.03, gamma=0.6, eps=1e-4),
    "adam": dict(lr=0.05, beta1=0.7, beta2=0.8, eps=1e-4),
    "adamax": dict(lr=0.05, beta1=0.7, beta2=0.8, eps=0.0),
    "nadam": dict(lr=0.05, beta1=0.7, beta2=0.8, eps=1e-4),
    "amsgrad": dict(lr=0.1, beta1=0.7, beta2=0.5, eps=1e-4),
}


def reference_trajectory(name: str, hyper: dict[str, float], steps: int = STEPS,
                         lr_at: Optional[Callable[[int], float]] = None, clip_norm: Optional[float] = None,
                         weight_decay: float = 0.0) -> list[np.ndarray]:
    """θ after each step, with the options applied as their formulas say."""
    rule = EQUATIONS[name]
    base_lr = hyper.get("lr", inspect.signature(rule).parameters["lr"].default)
    lr_at = lr_at or (lambda k: base_lr)
    theta, state, out = THETA0.copy(), {}, []
    for k in range(steps):
        g = numpy_grad(theta)
        if clip_norm is not None:
            g = g * min(1.0, clip_norm / np.linalg.norm(g))
        lr = lr_at(k)
        theta = rule(theta, g, k + 1, state, **{**hyper, "lr": lr}) - lr * weight_decay * IS_WEIGHT * theta
        out.append(theta)
    return out


def compiled_trajectory(optimizer: gc.optim.Optimizer, steps: int = STEPS) -> list[np.ndarray]:
    step = linear_step(optimizer)
    out = []
    for _ in range(steps):
        run(step)
        out.append(theta_of(step))
    return out


def assert_same_trajectory(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    for k, (a, b) in enumerate(zip(got, want)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=f"θ after step {k + 1}")


def test_every_optimizer_has_its_equations_here():
    assert set(EQUATIONS) == set(BY_NAME) == set(CUSTOM)


@pytest.mark.parametrize("name", NAMES)
def test_default_hyperparameters_are_the_papers(name):
    """The equations above carry the papers' defaults; the trajectories below show every
    hyperparameter reaches its place in the rule, so equal defaults mean equal default behaviour."""
    paper = {k: p.default for k, p in inspect.signature(EQUATIONS[name]).parameters.items()
             if p.default is not inspect.Parameter.empty}
    optimizer = BY_NAME[name]()
    assert {k: getattr(optimizer, k) for k in paper} == paper
    shared = {"clip_norm", "grad_noise", "weight_decay"}
    assert set(paper) == {f.name for f in dataclasses.fields(optimizer)} - shared


@pytest.mark.parametrize("name", NAMES)
def test_trajectory_matches_the_equations(name):
    hyper = CUSTOM[name]
    assert_same_trajectory(compiled_trajectory(BY_NAME[name](**hyper)), reference_trajectory(name, hyper))


RATE, CLIP, DECAY = 0.8, 0.5, 0.3  # the exponential schedule's rate, clip_norm, weight_decay


def with_every_option(name: str) -> gc.optim.Optimizer:
    lr, hyper = CUSTOM[name]["lr"], without_lr(CUSTOM[name])
    return BY_NAME[name](Exponential(lr, RATE), clip_norm=CLIP, weight_decay=DECAY, **hyper)


def without_lr(hyper: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in hyper.items() if k != "lr"}


@pytest.mark.parametrize("name", NAMES)
def test_trajectory_with_every_option(name):
    lr = CUSTOM[name]["lr"]
    want = reference_trajectory(name, without_lr(CUSTOM[name]), lr_at=lambda k: lr * RATE ** k, clip_norm=CLIP,
                                weight_decay=DECAY)
    assert_same_trajectory(compiled_trajectory(with_every_option(name)), want)


@pytest.mark.parametrize("name", NAMES)
def test_step_reports_the_loss_before_its_update(name):
    step = linear_step(BY_NAME[name](**CUSTOM[name]))
    losses = [float(run(step)) for _ in range(3)]
    thetas = [THETA0] + reference_trajectory(name, CUSTOM[name], steps=2)
    np.testing.assert_allclose(losses, [numpy_loss(t) for t in thetas], rtol=1e-12)


def test_nesterov_is_classic_nag_at_the_lookahead_point():
    """Ruder's NAG takes the gradient at θ − γv; the stored θ is that look-ahead point."""
    lr, gamma = 0.05, 0.7
    theta, v = THETA0.copy(), np.zeros_like(THETA0)
    step = linear_step(gc.optim.Nesterov(lr, gamma))
    for _ in range(STEPS):
        v = gamma * v + lr * numpy_grad(theta - gamma * v)
        theta = theta - v
        run(step)
        np.testing.assert_allclose(theta_of(step), theta - gamma * v, rtol=1e-10, atol=1e-12)


def test_amsgrad_steps_with_the_largest_second_moment_seen():
    step = linear_step(gc.optim.AMSGrad(**CUSTOM["amsgrad"]))
    for _ in range(STEPS):
        run(step)
    v, v_max = step.state.values["amsgrad.v"], step.state.values["amsgrad.v_max"]
    assert np.all(v_max >= v)
    assert np.any(v_max > v), "the problem should make some second moment shrink"


# ---------------------------------------------------------------- schedules

def step_decay(k):
    return 0.1 * 0.5 ** (k // 3)


def exponential(k):
    return 0.1 * 0.9 ** k


def cosine(k):
    return 0.01 + (0.1 - 0.01) * (1 + math.cos(math.pi * min(k, 10) / 10)) / 2


SCHEDULES = [(StepDecay(0.1, every=3, factor=0.5), step_decay),
             (Exponential(0.1, rate=0.9), exponential),
             (Cosine(0.1, total_steps=10, floor=0.01), cosine)]
SCHEDULE_IDS = ["step_decay", "exponential", "cosine"]


@pytest.mark.parametrize("schedule, formula", SCHEDULES, ids=SCHEDULE_IDS)
def test_schedule_graph_matches_its_formula(schedule, formula):
    k = gc.input("k", (), "float64")
    for steps_done in range(16):
        (value,) = gc.evaluate([schedule(k)], {"k": np.array(float(steps_done))})
        assert value == pytest.approx(formula(steps_done), rel=1e-14)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("schedule, formula", SCHEDULES, ids=SCHEDULE_IDS)
def test_train_step_applies_the_scheduled_rate(schedule, formula, dtype):
    """With a constant gradient c, SGD's step k moves θ by exactly lr_k · c."""
    c = np.linspace(0.5, 2.0, 4)
    p = gc.param("p", (4,), dtype=dtype)
    step = gc.compile(gc.sum(p * gc.constant(c, dtype)), optimizer=gc.optim.SGD(schedule))
    rtol, atol = (1e-12, 1e-13) if dtype == "float64" else (1e-5, 2e-6)
    previous = np.zeros(4)  # p starts at zero
    for k in range(14):
        step()
        current = step.state.values["p"].astype("float64")
        rate = (previous - current) / c
        previous = current
        np.testing.assert_allclose(rate, formula(k), rtol=rtol, atol=atol, err_msg=f"step {k}")


@pytest.mark.parametrize("bad", [lambda: StepDecay(0.1, every=0), lambda: Exponential(-0.1, 0.9),
                                 lambda: Cosine(0.1, total_steps=10, floor=0.2), lambda: StepDecay(0.1, 2.5)])
def test_schedule_rejects_bad_arguments(bad):
    with pytest.raises(OptimizerError):
        bad()


# ---------------------------------------------------------------- clipping, weight decay, noise

def applied_gradient(optimizer: gc.optim.SGD) -> np.ndarray:
    step = linear_step(optimizer)
    run(step)
    return (THETA0 - theta_of(step)) / optimizer.lr


@pytest.mark.parametrize("ratio", [0.25, 0.999])
def test_clip_norm_rescales_a_longer_gradient_to_norm_c(ratio):
    g = numpy_grad(THETA0)
    c = ratio * np.linalg.norm(g)
    clipped = applied_gradient(gc.optim.SGD(0.1, clip_norm=c))
    assert np.linalg.norm(clipped) == pytest.approx(c, rel=1e-12)
    np.testing.assert_allclose(clipped, g * (c / np.linalg.norm(g)), rtol=1e-10)


@pytest.mark.parametrize("ratio", [1.001, 4.0])
def test_clip_norm_leaves_a_shorter_gradient_untouched(ratio):
    c = ratio * np.linalg.norm(numpy_grad(THETA0))
    np.testing.assert_array_equal(applied_gradient(gc.optim.SGD(0.1, clip_norm=c)),
                                  applied_gradient(gc.optim.SGD(0.1)))


@pytest.mark.parametrize("bias", [True, False], ids=["weights_and_biases", "weights_only"])
@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_weight_decay_shrinks_weights_not_biases(name, bias):
    """Decoupled: one step with decay λ lands lr · λ · W0 short of the step without, biases equal."""
    lr = 0.05
    plain = linear_step(make(name, lr), bias=bias)
    decayed = linear_step(make(name, lr, weight_decay=0.3), bias=bias)
    run(plain), run(decayed)
    np.testing.assert_allclose(plain.state.values["W"] - decayed.state.values["W"], lr * 0.3 * W0,
                               rtol=1e-9, atol=1e-15)
    if bias:
        np.testing.assert_array_equal(plain.state.values["b"], decayed.state.values["b"])


def noise_step(grad_noise: Optional[tuple[float, float]], seed: int = 7) -> tuple[Any, np.ndarray]:
    """SGD with lr 1 on Σ p ⊙ c, whose gradient is c: θ moves by c plus the noise."""
    c = np.linspace(-1.0, 1.0, 20000)
    p = gc.param("p", (200, 100), dtype="float64")
    loss = gc.sum(p * gc.constant(c.reshape(200, 100)))
    return gc.compile(loss, optimizer=gc.optim.SGD(1.0, grad_noise=grad_noise), seed=seed), c


def test_gradient_noise_has_the_annealed_variance():
    eta, gamma = 0.3, 0.55
    step, c = noise_step((eta, gamma))
    previous = np.zeros(c.size)  # p starts at zero
    for k in range(4):
        step()
        current = step.state.values["p"].ravel().copy()
        noise = previous - current - c
        previous = current
        variance = eta / (1 + k) ** gamma
        assert np.var(noise) == pytest.approx(variance, rel=0.1), f"step {k}"
        assert abs(np.mean(noise)) < 5 * math.sqrt(variance / noise.size), f"step {k}"


@pytest.mark.parametrize("name", NAMES)
def test_gradient_noise_is_off_by_default(name):
    step = linear_step(make(name))
    assert not [n for n in step.program.nodes() if n.kind == "random"]


def test_noise_free_steps_are_deterministic():
    first, _ = noise_step(None, seed=1)
    second, _ = noise_step(None, seed=2)
    first(), second()
    np.testing.assert_array_equal(first.state.values["p"], second.state.values["p"])


# ---------------------------------------------------------------- denormal flushing

def special_values(dtype: str) -> np.ndarray:
    info = np.finfo(dtype)
    subnormal = np.nextafter(info.tiny, 0, dtype=dtype)
    return np.array([0.0, -0.0, info.tiny, -info.tiny, subnormal, -subnormal, info.smallest_subnormal,
                     info.tiny / 3, 1.0, -3.5, 1e-30, info.max, np.inf, -np.inf, np.nan], dtype=dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_flush_denormals_zeroes_subnormals_and_keeps_the_rest_bit_exact(dtype):
    values = special_values(dtype)
    x = gc.input("x", (len(values),), dtype)
    flushed = flush_denormals(x)
    compiled = gc.compile(flushed)(x=values)
    (interpreted,) = gc.evaluate([flushed], {"x": values})
    subnormal = (values != 0) & (np.abs(values) < np.finfo(dtype).tiny)
    assert subnormal.sum() == 4
    for got in (compiled, interpreted):
        assert got.dtype == np.dtype(dtype)
        assert np.all(got[subnormal | (values == 0)] == 0)
        bits = np.dtype(f"uint{8 * np.dtype(dtype).itemsize}")
        np.testing.assert_array_equal(got[~subnormal & (values != 0)].view(bits),
                                      values[~subnormal & (values != 0)].view(bits))


@pytest.mark.parametrize("name, dtype", [(n, "float32") for n in NAMES if n != "sgd"] + [("adam", "float64")])
def test_every_state_vector_is_stored_flushed(name, dtype):
    """Load subnormal moments and take a step with a zero gradient: no state stays subnormal."""
    p0 = np.array([0.5, -1.0, 2.0, 0.0])
    p = gc.param("p", (4,), init=fixed(p0), dtype=dtype)
    x = gc.input("x", (4,), dtype)
    optimizer = make(name)
    step = gc.compile(gc.sum(p * x), optimizer=optimizer)
    slots = [v for v in step.program.updates if v.op == "state" and v.name != f"{optimizer.name}.step"]
    assert slots
    subnormal = np.finfo(dtype).tiny / 2
    for slot in slots:
        step.state.ensure(slot)[...] = subnormal
    step(x=np.zeros(4, dtype))
    for slot in slots:
        assert np.all(step.state.values[slot.name] == 0), slot.name
    np.testing.assert_array_equal(step.state.values["p"], p0.astype(dtype))


# ---------------------------------------------------------------- against the interpreter, and training

def assert_agrees_with_the_interpreter(step: Any, steps: int = 3) -> None:
    for _ in range(steps):
        # Both draw any gradient noise from generators seeded alike.
        step.state.rng.bit_generator.state = np.random.default_rng(0).bit_generator.state
        loss_reference, updates = step.reference(x=X, y=Y)
        loss = run(step)
        assert float(loss) == pytest.approx(float(loss_reference), rel=1e-12)
        assert set(updates) == {v.name for v in step.program.updates}
        for var_name, value in updates.items():
            np.testing.assert_allclose(step.state.values[var_name], value, rtol=1e-12, atol=1e-15,
                                       err_msg=var_name)


@pytest.mark.parametrize("name", NAMES)
def test_compiled_step_agrees_with_the_interpreter(name):
    assert_agrees_with_the_interpreter(linear_step(with_every_option(name)))


def test_compiled_noise_agrees_with_the_interpreter():
    optimizer = gc.optim.Adam(Cosine(0.05, total_steps=4, floor=0.01), grad_noise=(0.01, 0.55))
    assert_agrees_with_the_interpreter(linear_step(optimizer))


def blobs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(-1.5, 1.0, (50, 2)), rng.normal(1.5, 1.0, (50, 2))]).astype("float32")
    y = np.r_[np.zeros(50), np.ones(50)].astype("float32")[:, None]
    return x, y


BLOB_LR = dict(sgd=0.5, momentum=0.1, nesterov=0.1, adagrad=0.5, adadelta=1.0, rmsprop=0.01,
               adam=0.05, adamax=0.05, nadam=0.05, amsgrad=0.05)


@pytest.mark.parametrize("name", NAMES)
def test_logistic_regression_loss_goes_down(name):
    x, y = gc.input("x", (None, 2)), gc.input("y", (None, 1))
    logits = x @ gc.param("W", (2, 1)) + gc.param("b", (1,))
    step = gc.compile(gc.sigmoid_binary_cross_entropy(logits, y), optimizer=make(name, BLOB_LR[name]))
    xs, ys = blobs()
    losses = [float(step(x=xs, y=ys)) for _ in range(101)]
    assert np.all(np.isfinite(losses))
    assert losses[100] < losses[50] < 0.75 * losses[0]


# ---------------------------------------------------------------- the registry and argument checks

def test_make_builds_the_named_optimizer_with_its_options():
    optimizer = make("Adam", 0.01, beta2=0.99, clip_norm=2.0)
    assert isinstance(optimizer, gc.optim.Adam)
    assert (optimizer.lr, optimizer.beta2, optimizer.clip_norm) == (0.01, 0.99, 2.0)
    assert make("rmsprop").lr == gc.optim.RMSprop().lr


def test_make_names_the_choices_for_an_unknown_optimizer():
    with pytest.raises(OptimizerError) as info:
        make("adamw")
    assert isinstance(info.value, GraphcError)
    for name in NAMES:
        assert name in str(info.value)


def test_make_names_the_options_for_an_unknown_option():
    with pytest.raises(OptimizerError, match="beta1") as info:
        make("sgd", 0.1, beta1=0.9)
    assert "weight_decay" in str(info.value)


@pytest.mark.parametrize("bad", [dict(lr=-0.1), dict(lr="fast"), dict(beta1=1.0), dict(eps=0.0),
                                 dict(clip_norm=0.0), dict(grad_noise=(0.1,)), dict(weight_decay=-1e-4)])
def test_bad_hyperparameters_are_refused_at_construction(bad):
    with pytest.raises(OptimizerError, match=next(iter(bad))):
        gc.optim.Adam(**bad)
