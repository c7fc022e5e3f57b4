"""The dense cache: same model, data, recipe and seed → the stored network; any change → another key."""

import dataclasses
from pathlib import Path

import pytest
import torch

from hwprune import cache
from hwprune.config import ProjectConfig, TrainConfig
from hwprune.pipeline import RunOptions
from hwprune.progress import NullProgress
from hwprune.targets import load_target, target_dirs

TINY = ProjectConfig(train=TrainConfig(epochs=1, batch_size=64))


def _data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    split = torch.utils.data.TensorDataset(torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,),
                                                                                               generator=g))
    return split, split, split


def test_key_changes_with_model_data_recipe_and_seed(cnn):
    data = _data()
    key = cache.dense_key(TINY, cnn, data)
    assert key == cache.dense_key(TINY, cnn, data)
    assert key != cache.dense_key(dataclasses.replace(TINY, seed=1), cnn, data)
    assert key != cache.dense_key(dataclasses.replace(TINY, train=TrainConfig(epochs=2, batch_size=64)), cnn, data)
    assert key != cache.dense_key(TINY, cnn, _data(seed=1))
    # torch threads do not change what is trained
    assert key == cache.dense_key(dataclasses.replace(TINY, train=TrainConfig(epochs=1, batch_size=64, threads=1)),
                                  cnn, data)
    with torch.no_grad():
        cnn.features[0].weight[0, 0, 0, 0] += 1.0
    assert key != cache.dense_key(TINY, cnn, data)


@pytest.mark.slow
def test_second_training_comes_from_the_cache(tmp_path, fashion_dir):
    target = load_target("x86-cpu", target_dirs())
    options = RunOptions(out_dir=tmp_path / "o", profiles_dir=tmp_path / "p", data_limit=256, cache_dir=tmp_path / "c")
    first = options.train_dense(TINY, target, NullProgress())
    second = options.train_dense(TINY, target, NullProgress())
    assert not first.cached and second.cached and first.cache_key == second.cache_key
    assert second.accuracy == first.accuracy and second.rewind_at == first.rewind_at
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(first.theta_k.state_dict().values(), second.theta_k.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # a truncated entry is ignored (trained again), never fatal
    entry = next(Path(tmp_path / "c").glob("dense-*.pt"))
    entry.write_bytes(entry.read_bytes()[:100])
    third = options.train_dense(TINY, target, NullProgress())
    assert not third.cached and third.accuracy == first.accuracy
