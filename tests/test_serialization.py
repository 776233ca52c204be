"""Loading a config runs no code: functions resolve only through custom_objects and the
registry, unless the caller trusts the file (safe_mode=False)."""

from __future__ import annotations

import numpy as np
import pytest

import numlayers
from numlayers.layers import Dense, Lambda, deserialize
from numlayers.models import Sequential
from numlayers.serialization import function_reference

CALLS: list[str] = []


def unregistered(x):
    CALLS.append("unregistered")
    return x


@numlayers.register_function
def counted_double(x):
    CALLS.append("counted_double")
    return 2 * x


@numlayers.register_function(name="halve")
def halve(x):
    return x / 2


def lambda_config(reference: str) -> dict:
    return {"class_name": "Lambda", "name": "lambda_evil", "function": reference,
            "batch_input_shape": [None, 2]}  # fmt: skip


@pytest.mark.parametrize(
    "reference",
    [
        "builtins:exec",
        "builtins:eval",
        "builtins:input",
        "os:system",
        "pickle:loads",
        "sys:exit",
        "shutil:rmtree",
        "subprocess:Popen",
        "os.path:join",
        "numpy:load",
        f"{__name__}:unregistered",
        "numlayers.serialization:resolve_function",
        "numlayers:layers.core.np.save",
    ],
)
def test_a_config_naming_an_unregistered_callable_is_refused_and_nothing_runs(reference):
    CALLS.clear()
    with pytest.raises(ValueError, match="lambda_evil.*neither in custom_objects nor registered"):
        deserialize(lambda_config(reference))
    model_config = {"class_name": "Sequential", "layers": [lambda_config(reference)]}
    with pytest.raises(ValueError, match="lambda_evil"):
        Sequential.from_config(model_config)
    assert CALLS == []


def test_registered_functions_load_and_loading_calls_no_function():
    layer = Lambda(counted_double, input_shape=(2,))
    config = layer.get_config()
    assert config["function"] == f"{__name__}:counted_double"
    assert config["output_shape"] == [2]  # saved, so loading needs no probe call
    CALLS.clear()
    rebuilt = deserialize(config)
    assert rebuilt.function is counted_double and CALLS == []
    np.testing.assert_allclose(rebuilt(np.ones((1, 2))), [[2.0, 2.0]])

    named = Lambda(halve, input_shape=(2,))
    assert named.get_config()["function"] == "halve"
    assert deserialize(named.get_config()).function is halve


def test_custom_objects_and_trusted_files_resolve_functions():
    config = lambda_config(f"{__name__}:unregistered")
    assert deserialize(config, custom_objects={"unregistered": unregistered}).function is (
        unregistered
    )
    assert deserialize(config, safe_mode=False).function is unregistered
    # the trust given to a model's load reaches the layers inside it
    model = Sequential.from_config(
        {"class_name": "Sequential", "layers": [config, Dense(2).get_config()]}, safe_mode=False
    )
    assert model.layers[0].function is unregistered
    with pytest.raises(ValueError, match="does not name a function"):
        deserialize(lambda_config("numpy:pi"), safe_mode=False)


def test_functions_without_a_module_level_name_stay_objects():
    function = lambda x: x  # noqa: E731
    assert function_reference(function) is function
    with pytest.raises(ValueError, match="no module-level name"):
        numlayers.register_function(function)


def test_configs_nested_past_the_limit_are_refused_without_exhausting_the_stack():
    config: dict = Dense(2, input_shape=(3,)).get_config()
    for _ in range(2000):
        config = {"class_name": "TimeDistributed", "layer": config}
    with pytest.raises(ValueError, match="nests layers more than 64 deep"):
        deserialize(config)


def test_architectures_round_trip_through_json_and_yaml_and_load_no_object(tmp_path):
    from numlayers.graph import Graph
    from numlayers.models import model_from_json, model_from_yaml

    sequential = Sequential()
    sequential.add(Dense(4, input_dim=3, activation="tanh"))
    sequential.add(Dense(2, activation="softmax"))
    graph = Graph()
    graph.add_input("x", input_shape=(3,))
    graph.add_node(Dense(2), name="a", input="x")
    graph.add_node(Dense(2), name="b", input="x")
    graph.add_output("out", inputs=["a", "b"], merge_mode="sum")
    x = np.random.default_rng(0).standard_normal((5, 3)).astype("float32")
    weights = tmp_path / "weights.h5"
    for model, loader, text in (
        (sequential, model_from_json, sequential.to_json(indent=1)),
        (sequential, model_from_yaml, sequential.to_yaml()),
        (graph, model_from_json, graph.to_json()),
        (graph, model_from_yaml, graph.to_yaml(default_flow_style=False)),
    ):
        rebuilt = loader(text)
        assert type(rebuilt) is type(model) and rebuilt.get_config() == model.get_config()
        model.save_weights(str(weights), overwrite=True)
        rebuilt.load_weights(str(weights))
        feed = x if model is sequential else {"x": x}
        expected = model.predict(feed)
        got = rebuilt.predict(feed)
        if model is graph:
            expected, got = expected["out"], got["out"]
        np.testing.assert_array_equal(got, expected)
    with pytest.raises(ValueError, match="JSON must hold a mapping.*received list"):
        model_from_json("[1, 2]")
    import yaml

    with pytest.raises(yaml.YAMLError):  # safe_load makes no Python object, runs nothing
        model_from_yaml("!!python/object/apply:os.system ['echo hacked']")


def hinge_of_the_batch(y_true, y_pred):  # a loss function a config names
    return np.mean(np.maximum(1.0 - y_true * y_pred, 0.0))


def test_a_compiled_model_comes_back_compiled_from_its_json_and_yaml():
    """As in Keras 0.3, a compiled model's config holds its optimizer, loss, metrics and
    class mode; the rebuilt model trains step for step as the original."""
    from numlayers.graph import Graph
    from numlayers.models import model_from_json, model_from_yaml
    from numlayers.optimizers import SGD

    numlayers.set_seed(0)
    sequential = Sequential([Dense(3, input_shape=(4,), activation="softmax")])
    sequential.compile(
        SGD(lr=0.05, momentum=0.9, nesterov=True, clipnorm=1.0),
        "categorical_crossentropy",
        metrics=["accuracy"],
    )
    graph = Graph()
    graph.add_input("x", input_shape=(4,))
    graph.add_node(Dense(2, activation="tanh"), name="h", input="x", create_output=True)
    graph.add_node(Dense(1), name="r", input="x", create_output=True)
    graph.compile("rmsprop", {"h": hinge_of_the_batch, "r": "mse"})
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 4))
    data = {
        sequential.name: (X, np.eye(3)[np.arange(6) % 3]),
        graph.name: ({"x": X, "h": np.sign(rng.standard_normal((6, 2))), "r": X[:, :1]},),
    }
    custom = {"hinge_of_the_batch": hinge_of_the_batch}
    for model in (sequential, graph):
        config = model.get_config()
        assert config["optimizer"]["class_name"] == type(model.optimizer).__name__
        texts = ((model.to_json(), model_from_json), (model.to_yaml(), model_from_yaml))
        initial = model.get_weights()
        # two steps of the original (momentum, clipping and metrics included)
        expected = [model.train_on_batch(*data[model.name]) for _ in range(2)]
        for text, loader in texts:
            rebuilt = loader(text, custom_objects=custom)
            assert rebuilt.get_config() == config
            rebuilt.set_weights(initial)
            got = [rebuilt.train_on_batch(*data[model.name]) for _ in range(2)]
            np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert "optimizer" not in Sequential([Dense(2, input_shape=(3,))]).get_config()


def test_a_compiled_config_names_its_optimizer_and_loss_function_safely():
    from numlayers.models import model_from_config

    model = Sequential([Dense(1, input_shape=(2,))])
    model.compile("sgd", hinge_of_the_batch)
    config = model.get_config()
    assert config["loss"] == f"{__name__}:hinge_of_the_batch"
    with pytest.raises(ValueError, match="loss.*neither in custom_objects nor registered"):
        model_from_config(config)  # loading runs no code it was not given
    trusted = model_from_config(config, safe_mode=False)
    assert trusted._losses[0].function is hinge_of_the_batch
    keras_style = dict(config, optimizer={"name": "SGD", "lr": 0.5})  # Keras 0.3's key
    assert model_from_config(keras_style, safe_mode=False).optimizer.lr == 0.5
    with pytest.raises(ValueError, match="unknown optimizer 'Nadam'"):
        model_from_config(dict(config, optimizer={"class_name": "Nadam"}), safe_mode=False)
    with pytest.raises(TypeError, match=r"SGD: unknown argument\(s\) \['rho'\]"):
        model_from_config(dict(config, optimizer={"class_name": "SGD", "rho": 1}), safe_mode=False)
