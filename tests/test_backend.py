"""`keras_cskd._backend.compile_identical_programs_once`: under JAX, a
model that compiles to the same program as one compiled before in the block
is loaded from JAX's compilation cache, not compiled again; nothing is left
behind; other backends are untouched."""

import os

import keras
import numpy as np
import pytest

from keras_cskd import _backend

BACKEND = keras.backend.backend()


def _fit_a_fresh_mlp(seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(7), keras.layers.Dense(3)])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    x = np.random.default_rng(seed).normal(size=(8, 5)).astype("float32")
    model.fit(x, np.zeros((8, 3), "float32"), batch_size=8, epochs=1, verbose=0)
    return model


@pytest.fixture
def no_cache_configured():
    """JAX's compilation cache as a user who never configured it has it
    (scripts/test.sh configures one for the whole JAX pass)."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    configured = {name: getattr(jax.config, name) for name in names}
    jax.config.update("jax_compilation_cache_dir", None)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    compilation_cache.reset_cache()
    yield
    for name, value in configured.items():
        jax.config.update(name, value)
    compilation_cache.reset_cache()


@pytest.fixture
def cache_hits():
    import jax

    hits = []

    def listener(event, **kwargs):
        if event == "/jax/compilation_cache/cache_hits":
            hits.append(event)

    jax.monitoring.register_event_listener(listener)
    yield hits
    jax.monitoring.unregister_event_listener(listener)


@pytest.mark.skipif(BACKEND != "jax", reason="JAX's compilation cache; a no-op elsewhere")
def test_the_second_identical_model_is_loaded_not_compiled(
    no_cache_configured, cache_hits, tmp_path, monkeypatch
):
    import jax

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    _fit_a_fresh_mlp(0)
    _fit_a_fresh_mlp(1)
    assert cache_hits == []  # without the block, JAX compiles every model's step
    before = {
        name: getattr(jax.config, name)
        for name in ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    }
    with _backend.compile_identical_programs_once():
        (folder,) = [path for path in tmp_path.iterdir() if path.name.startswith("keras-cskd-")]
        first = _fit_a_fresh_mlp(0)
        assert cache_hits == [] and any(folder.iterdir())  # compiled, and kept for reuse
        second = _fit_a_fresh_mlp(1)
        assert len(cache_hits) >= 1  # the train step, at least, was loaded
    # Loaded programs compute what compiled ones do: the second model equals
    # one trained from the same seed outside the block.
    reference = _fit_a_fresh_mlp(1)
    for loaded, compiled in zip(second.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(loaded, compiled)
    assert first.layers[0].name != second.layers[0].name  # two models, two names
    assert not folder.exists()
    assert {name: getattr(jax.config, name) for name in before} == before
    hits = len(cache_hits)
    _fit_a_fresh_mlp(2)
    assert len(cache_hits) == hits  # the cache is off again


@pytest.mark.skipif(BACKEND != "jax", reason="JAX's compilation cache; a no-op elsewhere")
def test_a_cache_folder_of_the_users_own_is_left_as_it_is(no_cache_configured, tmp_path):
    import jax

    jax.config.update("jax_compilation_cache_dir", str(tmp_path))
    with _backend.compile_identical_programs_once():
        assert jax.config.jax_compilation_cache_dir == str(tmp_path)
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 1.0


@pytest.mark.skipif(BACKEND == "jax", reason="the other backends")
def test_other_backends_are_untouched(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    with _backend.compile_identical_programs_once():
        assert os.listdir(tmp_path) == []
        _fit_a_fresh_mlp(0)
