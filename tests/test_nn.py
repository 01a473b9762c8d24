"""Tests of the layers in graphc.nn: batch norm against the paper's algorithms, noise,
mixtures, activations, initializers, path-based names and the model summary."""
from __future__ import annotations

from typing import Callable

import numpy as np
import pytest

import graphc as gc
from graphc import nn
from graphc.errors import GraphcError, ShapeError
from graphc.compiler.compiled_step import CompiledStep
from graphc.testing import check_grads

EPS = 1e-5


# ---------------------------------------------------------------- helpers

def batchnorm_algorithm_1(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Ioffe & Szegedy, Algorithm 1, transcribed line by line."""
    m = x.shape[0]
    mu = np.sum(x, axis=0) / m
    var = np.sum((x - mu) ** 2, axis=0) / m
    x_hat = (x - mu) / np.sqrt(var + EPS)
    return gamma * x_hat + beta


def batchnorm_algorithm_2(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                          mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Inference: y = γ / sqrt(Var[x] + ε) · x + (β − γ E[x] / sqrt(Var[x] + ε))."""
    scale = gamma / np.sqrt(var + EPS)
    return scale * x + (beta - scale * mean)


def initial_values(nodes: list[gc.Node], seed: int = 0) -> dict[str, np.ndarray]:
    store = gc.Store(seed)
    return {n.name: store.ensure(n).copy() for n in nodes}


def named(module: nn.Module) -> dict[str, gc.Node]:
    return {v.name: v for v in module.parameters() + module.states()}


# ---------------------------------------------------------------- batch norm: Algorithm 1

def test_batchnorm_forward_matches_algorithm_1():
    rng = np.random.default_rng(1)
    x = gc.input("x", (None, 4), "float64")
    bn = nn.BatchNorm(name="bn")
    y = bn(x)
    values = {"bn.gamma": rng.normal(size=4), "bn.beta": rng.normal(size=4)}
    data = rng.normal(3.0, 2.0, size=(9, 4))
    expected = batchnorm_algorithm_1(data, values["bn.gamma"], values["bn.beta"])

    (interpreted,) = gc.evaluate([y], {"x": data}, values)
    compiled_fn = gc.compile(y)
    compiled_fn.state.load(values)
    np.testing.assert_allclose(interpreted, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(compiled_fn(x=data), expected, rtol=1e-12, atol=1e-12)


def test_batchnorm_starts_as_identity_normalization():
    x = gc.input("x", (None, 3), "float64")
    bn = nn.BatchNorm(name="bn")
    data = np.random.default_rng(2).normal(-1.0, 5.0, size=(16, 3))
    out = gc.compile(bn(x))(x=data)
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(out.var(axis=0), data.var(axis=0) / (data.var(axis=0) + EPS), rtol=1e-12)


def test_batchnorm_gradients_match_finite_differences():
    rng = np.random.default_rng(3)
    x = gc.input("x", (None, 3), "float64")
    bn = nn.BatchNorm(name="bn")
    y = gc.tanh(bn(x))
    gamma, beta = bn.parameters()
    check_grads(y, {"x": rng.normal(size=(6, 3))}, [x, gamma, beta],
                variables={"bn.gamma": rng.normal(size=3), "bn.beta": rng.normal(size=3)})


def test_batchnorm_gradient_flows_through_the_batch_statistics():
    # Σ_n y_n does not depend on x when μ_B and σ²_B are differentiated (the
    # normalized batch always sums to 0); a layer that cut their gradient would
    # report γ / sqrt(σ² + ε) instead.
    x = gc.input("x", (None, 2), "float64")
    bn = nn.BatchNorm(name="bn")
    (dx_node,) = gc.grad(gc.sum(bn(x)), [x])
    (dx,) = gc.evaluate([dx_node], {"x": np.random.default_rng(4).normal(size=(5, 2))},
                        initial_values(bn.parameters()))
    np.testing.assert_allclose(dx, 0.0, atol=1e-12)


# ---------------------------------------------------------------- batch norm: running averages

def regression_net_with_batchnorm() -> tuple[nn.Sequential, gc.Node, CompiledStep]:
    x = gc.input("x", (None, 3))
    t = gc.input("t", (None, 1))
    net = nn.Sequential(nn.BatchNorm(), nn.Dense(1))
    step = gc.compile(gc.mse(net(x), t), optimizer=gc.optim.SGD(0.01))
    return net, x, step


def shifted_dataset(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    data = rng.normal([1.0, -2.0, 5.0], [0.5, 2.0, 3.0], size=(n, 3)).astype("float32")
    targets = rng.normal(size=(n, 1)).astype("float32")
    return data, targets


def test_running_averages_are_updated_by_the_compiled_step_as_algorithm_2():
    _, _, step = regression_net_with_batchnorm()
    assert {"batchnorm0.mean", "batchnorm0.var"} <= {v.name for v in step.program.updates}
    data, targets = shifted_dataset(400, seed=5)
    batches = np.split(np.arange(400), 10)
    mean, var = np.zeros(3), np.ones(3)
    for _ in range(30):
        for idx in batches:
            step(x=data[idx], t=targets[idx])
            batch = data[idx].astype(np.float64)
            mean = 0.9 * mean + 0.1 * batch.mean(axis=0)
            var = 0.9 * var + 0.1 * batch.var(axis=0, ddof=1)
    stored = step.state.values
    np.testing.assert_allclose(stored["batchnorm0.mean"], mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stored["batchnorm0.var"], var, rtol=1e-4)
    # ... and they have settled near the data set's statistics.
    np.testing.assert_allclose(stored["batchnorm0.mean"], data.mean(axis=0), atol=0.1 * data.std(axis=0).max())
    np.testing.assert_allclose(stored["batchnorm0.var"], data.var(axis=0, ddof=1), rtol=0.1)


def test_running_averages_converge_to_the_population_statistics_on_full_batches():
    _, _, step = regression_net_with_batchnorm()
    data, targets = shifted_dataset(200, seed=6)
    for _ in range(250):
        step(x=data, t=targets)
    population = data.astype(np.float64)
    np.testing.assert_allclose(step.state.values["batchnorm0.mean"], population.mean(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(step.state.values["batchnorm0.var"], population.var(axis=0, ddof=1), rtol=1e-5)


def test_a_batch_of_one_leaves_the_running_variance_unchanged():
    _, _, step = regression_net_with_batchnorm()
    data, targets = shifted_dataset(1, seed=7)
    step(x=data, t=targets)
    np.testing.assert_array_equal(step.state.values["batchnorm0.var"], np.ones(3))
    np.testing.assert_allclose(step.state.values["batchnorm0.mean"], 0.1 * data[0], rtol=1e-6)


def test_compiled_inference_uses_the_running_averages():
    net, x, step = regression_net_with_batchnorm()
    data, targets = shifted_dataset(120, seed=8)
    for idx in np.split(np.arange(120), 4):
        step(x=data[idx], t=targets[idx])
    infer = gc.compile(net(x, training=False), state=step.state)
    assert not infer.program.updates
    v = step.state.values
    running = {k: v[k].copy() for k in ("batchnorm0.mean", "batchnorm0.var")}

    new_data = (data[:5] + 10.0).astype("float32")
    out = infer(x=new_data)
    normalized = batchnorm_algorithm_2(new_data.astype(np.float64), v["batchnorm0.gamma"], v["batchnorm0.beta"],
                                       running["batchnorm0.mean"], running["batchnorm0.var"])
    np.testing.assert_allclose(out, normalized @ v["dense1.W"] + v["dense1.b"], rtol=1e-4, atol=1e-5)
    for name, before in running.items():
        np.testing.assert_array_equal(v[name], before)
    # A single example is fine at inference: nothing depends on the batch.
    np.testing.assert_allclose(infer(x=new_data[:1]), out[:1], rtol=1e-6)


def test_compiled_batchnorm_train_step_matches_the_reference_interpreter():
    x = gc.input("x", (None, 4))
    labels = gc.input("labels", (None,), "int32")
    net = nn.Sequential(nn.Dense(6), nn.BatchNorm(), "tanh", nn.Dense(3))
    step = gc.compile(gc.softmax_cross_entropy(net(x), labels), optimizer=gc.optim.SGD(0.1))
    rng = np.random.default_rng(9)
    for _ in range(3):
        data = rng.normal(size=(10, 4)).astype("float32")
        classes = rng.integers(0, 3, size=10).astype("int32")
        expected_loss, expected_updates = step.reference(x=data, labels=classes)
        loss = step(x=data, labels=classes)
        np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
        assert {"batchnorm1.mean", "batchnorm1.var", "batchnorm1.gamma"} <= set(expected_updates)
        for name, value in expected_updates.items():
            np.testing.assert_allclose(step.state.values[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


# ---------------------------------------------------------------- noise

def test_gaussian_noise_is_active_only_in_training_with_the_right_std():
    x = gc.input("x", (None, 4))
    noise = nn.GaussianNoise(0.3)
    data = np.random.default_rng(10).normal(size=(20000, 4)).astype("float32")
    train = gc.compile(noise(x, training=True))
    first, second = train(x=data) - data, train(x=data) - data
    assert abs(first.std() / 0.3 - 1) < 0.02
    assert abs(first.mean()) < 0.01
    assert not np.allclose(first, second)
    assert noise(x, training=False) is x
    np.testing.assert_array_equal(gc.compile(noise(x, training=False))(x=data), data)


def test_gaussian_noise_rejects_a_negative_std():
    with pytest.raises(GraphcError, match="non-negative"):
        nn.GaussianNoise(-0.1)


# ---------------------------------------------------------------- mixtures

def softmax_np(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_mixture_of_experts_weights_the_experts_by_the_softmax_gate():
    x = gc.input("x", (None, 5), "float64")
    moe = nn.MixtureOfExperts([nn.Dense(2), nn.Sequential(nn.Dense(4), "tanh", nn.Dense(2)), nn.Dense(2, bias=False)],
                              gate=nn.Dense(3), name="moe")
    f = gc.compile({"y": moe(x), "gates": moe.gates(x)})
    data = np.random.default_rng(11).normal(size=(7, 5))
    out = f(x=data)
    p = f.state.values

    gates = softmax_np(data @ p["moe.gate.W"] + p["moe.gate.b"])
    experts = [data @ p["moe.expert0.W"] + p["moe.expert0.b"],
               np.tanh(data @ p["moe.expert1.dense0.W"] + p["moe.expert1.dense0.b"]) @ p["moe.expert1.dense2.W"]
               + p["moe.expert1.dense2.b"],
               data @ p["moe.expert2.W"]]
    expected = sum(gates[:, [k]] * e for k, e in enumerate(experts))
    np.testing.assert_allclose(out["gates"], gates, rtol=1e-12)
    np.testing.assert_allclose(out["gates"].sum(axis=1), 1.0, rtol=1e-12)
    assert (out["gates"] > 0).all()
    np.testing.assert_allclose(out["y"], expected, rtol=1e-10)


def test_mixture_of_experts_gradients_match_finite_differences():
    x = gc.input("x", (None, 3), "float64")
    moe = nn.MixtureOfExperts([nn.Dense(2), nn.Sequential(nn.Dense(2), "tanh")], name="moe")
    y = moe(x)
    check_grads(y, {"x": np.random.default_rng(12).normal(size=(4, 3))}, [x] + moe.parameters(),
                variables=initial_values(moe.parameters(), seed=12))


def test_mixture_of_experts_checks_the_gate_width():
    x = gc.input("x", (None, 5))
    moe = nn.MixtureOfExperts([nn.Dense(2), nn.Dense(2)], gate=nn.Dense(3))
    with pytest.raises(ShapeError, match="3 logits per example for 2 experts"):
        moe(x)


def test_ensemble_averages_the_members_outputs():
    x = gc.input("x", (None, 4), "float64")
    members = [nn.Dense(3), nn.Sequential(nn.Dense(5), "relu", nn.Dense(3)), nn.Dense(3, init="normal")]
    ensemble = nn.Ensemble(members)
    f = gc.compile([ensemble(x)] + [m(x) for m in members])
    data = np.random.default_rng(13).normal(size=(6, 4))
    combined, *outputs = f(x=data)
    np.testing.assert_allclose(combined, np.mean(outputs, axis=0), rtol=1e-12)


def test_ensemble_can_average_probabilities_and_returns_logits_for_them():
    x = gc.input("x", (None, 4), "float64")
    members = [nn.Dense(3), nn.Dense(3), nn.Dense(3)]
    ensemble = nn.Ensemble(members, average="probabilities")
    f = gc.compile([ensemble(x)] + [m(x) for m in members])
    data = np.random.default_rng(14).normal(size=(6, 4)) * np.array([[1.0]] * 3 + [[1e3]] * 3)
    combined, *outputs = f(x=data)
    assert np.isfinite(combined).all()
    expected = np.mean([softmax_np(o) for o in outputs], axis=0)
    np.testing.assert_allclose(softmax_np(combined), expected, rtol=1e-9, atol=1e-300)
    np.testing.assert_allclose(np.exp(combined), expected, rtol=1e-9, atol=1e-300)


def test_ensemble_probability_average_gradients_match_finite_differences():
    x = gc.input("x", (None, 3), "float64")
    labels = gc.input("labels", (None,), "int32")
    ensemble = nn.Ensemble([nn.Dense(4), nn.Dense(4)], average="probabilities", name="ens")
    loss = gc.softmax_cross_entropy(ensemble(x), labels)
    feeds = {"x": np.random.default_rng(15).normal(size=(5, 3)), "labels": np.array([0, 3, 1, 2, 3], dtype="int32")}
    check_grads(loss, feeds, [x] + ensemble.parameters(), variables=initial_values(ensemble.parameters(), seed=15))


def test_ensemble_rejects_an_unknown_average():
    with pytest.raises(GraphcError, match="'outputs' or 'probabilities'"):
        nn.Ensemble([nn.Dense(2)], average="median")  # type: ignore[arg-type]


# ---------------------------------------------------------------- activations and initializers

@pytest.mark.parametrize("name, reference", [
    ("relu", lambda z: np.maximum(z, 0)), ("tanh", np.tanh), ("sigmoid", lambda z: 1 / (1 + np.exp(-z))),
    ("softmax", softmax_np),
])
def test_activations_by_name_are_layers(name: str, reference: Callable[[np.ndarray], np.ndarray]):
    x = gc.input("x", (None, 3), "float64")
    data = np.random.default_rng(16).normal(size=(4, 3)) * 3
    by_string = gc.compile(nn.Sequential(name)(x))(x=data)
    by_class = gc.compile(nn.Activation(name)(x))(x=data)
    np.testing.assert_allclose(by_string, reference(data), rtol=1e-12)
    np.testing.assert_array_equal(by_class, by_string)


def test_unknown_activation_names_are_refused():
    with pytest.raises(GraphcError, match="unknown activation 'gelu'"):
        nn.Sequential(nn.Dense(2), "gelu")


def dense_weights(init: object, fan_in: int = 400, units: int = 300) -> np.ndarray:
    dense = nn.Dense(units, init=init, name="layer")
    dense(gc.input("x", (None, fan_in)))
    (w, b) = dense.parameters()
    values = initial_values([w, b])
    np.testing.assert_array_equal(values["layer.b"], 0.0)
    return values["layer.W"]


def test_dense_initializers_by_name_have_their_documented_scale():
    fan_in, units = 400, 300
    he = dense_weights("he")
    assert abs(he.std() / np.sqrt(2.0 / fan_in) - 1) < 0.02
    glorot = dense_weights("glorot")
    limit = np.sqrt(6.0 / (fan_in + units))
    assert np.abs(glorot).max() <= limit
    assert abs(glorot.std() / (limit / np.sqrt(3)) - 1) < 0.02
    assert abs(dense_weights("normal").std() / 0.01 - 1) < 0.02
    assert abs(dense_weights(gc.init.normal(0.05)).std() / 0.05 - 1) < 0.02


def test_dense_refuses_an_unknown_initializer_name():
    with pytest.raises((ValueError, GraphcError), match="unknown initializer 'xavier'"):
        nn.Dense(3, init="xavier")


# ---------------------------------------------------------------- names

def nested_model() -> nn.Sequential:
    def mlp() -> nn.Sequential:
        return nn.Sequential(nn.Dense(4), nn.BatchNorm(), "relu", nn.Dense(2))

    return nn.Sequential(
        nn.Dense(6),
        nn.MixtureOfExperts([mlp(), mlp(), nn.Dense(2, name="linear")]),
        nn.Ensemble([mlp(), mlp()]),
    )


def built_names(model: nn.Module) -> list[str]:
    x = gc.input("x", (None, 3))
    model(x)
    return [v.name for v in model.parameters() + model.states()]


def test_nested_containers_give_unique_path_based_names_stable_across_rebuilds():
    names = built_names(nested_model())
    assert len(names) == len(set(names))
    assert {"dense0.W", "moe1.expert1.dense0.W", "moe1.expert0.batchnorm1.mean", "moe1.linear.W",
            "moe1.gate.W", "ensemble2.member1.dense3.b", "ensemble2.member0.batchnorm1.gamma"} <= set(names)
    assert built_names(nested_model()) == names


def test_identically_built_members_compile_into_one_train_step():
    x = gc.input("x", (None, 3))
    t = gc.input("t", (None, 2))
    model = nested_model()
    step = gc.compile(gc.mse(model(x), t), optimizer=gc.optim.SGD(0.01))
    data = np.random.default_rng(17).normal(size=(8, 3)).astype("float32")
    assert np.isfinite(step(x=data, t=data[:, :2]))
    assert set(named(model)) <= set(step.state.values)


def test_a_module_cannot_be_renamed_after_it_built_its_variables():
    dense = nn.Dense(2)
    dense(gc.input("x", (None, 3)))
    with pytest.raises(GraphcError, match="already called"):
        nn.Sequential(nn.Dense(3), dense)


# ---------------------------------------------------------------- summary

def summary_rows(table: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in table.splitlines()}


def test_summary_lists_layers_with_output_shapes_and_parameter_counts():
    net = nn.Sequential(nn.Dense(5), nn.BatchNorm(), "relu", nn.Dense(2))
    net(gc.input("x", (None, 3)))
    table = nn.summary(net)
    rows = summary_rows(table)
    assert rows["dense0"][-2:] == ["[N,5]", str(3 * 5 + 5)]
    assert rows["batchnorm1"][-2:] == ["[N,5]", str(2 * 5)]
    assert rows["relu2"][-2:] == ["[N,5]", "0"]
    assert rows["dense3"][-2:] == ["[N,2]", str(5 * 2 + 2)]
    assert f"trainable parameters: {20 + 10 + 12}" in table
    assert f"state values (running statistics): {2 * 5}" in table


def test_summary_counts_a_containers_whole_subtree():
    moe = nn.MixtureOfExperts([nn.Sequential(nn.Dense(3), "tanh"), nn.Dense(3)], name="moe")
    table = nn.summary(nn.Sequential(moe), input_shape=(None, 4))
    rows = summary_rows(table)
    expert = 4 * 3 + 3
    gate = 4 * 2 + 2
    assert rows["moe"][-1] == f"{2 * expert + gate}"
    assert rows["moe.expert0"][-1] == rows["moe.expert0.dense0"][-1] == str(expert)
    assert rows["moe.gate"][-2:] == ["[N,2]", str(gate)]


def test_summary_needs_a_built_model_or_an_input_shape():
    with pytest.raises(GraphcError, match="input_shape"):
        nn.summary(nn.Sequential(nn.Dense(2)))
