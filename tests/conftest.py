"""Shared fixtures: the built-in model families, the user-model example (depthwise/residual/concat) and data."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import settings

ROOT = Path(__file__).resolve().parents[1]

# Hypothesis explores new inputs on every developer run; in CI (CI=true) it replays a fixed sequence, so a
# submission is judged on the same examples each time. A failure it finds prints the example to add as a test.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")
sys.path.insert(0, str(ROOT / "examples" / "mobile"))


def _randomise_bn(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics, so equivalence checks cannot pass by accident."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=gen) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=gen) * 0.4 - 0.2)
    return model.eval()


@pytest.fixture
def cnn() -> torch.nn.Module:
    from hwprune.models.example_cnn import build
    torch.manual_seed(0)
    return _randomise_bn(build())


@pytest.fixture
def mobile() -> torch.nn.Module:
    from mobile_net import build
    torch.manual_seed(0)
    return _randomise_bn(build())


@pytest.fixture
def resnet20() -> torch.nn.Module:
    from hwprune.models.resnet import build
    torch.manual_seed(0)
    return _randomise_bn(build())


@pytest.fixture
def mobilenetv2() -> torch.nn.Module:
    from hwprune.models.mobilenet_v2 import build
    torch.manual_seed(0)
    return _randomise_bn(build())


@pytest.fixture(params=["cnn", "mobile", "resnet20", "mobilenetv2"])
def any_model(request) -> torch.nn.Module:
    return request.getfixturevalue(request.param)


@pytest.fixture
def example() -> torch.Tensor:
    return torch.zeros(1, 1, 28, 28)


@pytest.fixture(scope="session", autouse=True)
def isolated_dense_cache(tmp_path_factory) -> Path:
    """Runs in tests (and the CLI they start) cache dense training in a temporary folder, not ~/.cache."""
    import os
    folder = tmp_path_factory.mktemp("dense-cache")
    os.environ["HWPRUNE_CACHE_DIR"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    from hwprune.data.fashion_mnist import DEFAULT_DIR
    if not (DEFAULT_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.fail("Fashion-MNIST is missing: apt-get install -y dataset-fashion-mnist (the CI installs it)")
    return DEFAULT_DIR


@pytest.hookimpl(tryfirst=True)  # before pytest's own -m selection reads the markers
def pytest_collection_modifyitems(config, items) -> None:
    """The fast loop (`pytest -m "not slow"`) runs the first case of each parametrized test; the other cases,
    which differ only in their input, are marked `slow` and run in the whole suite (the README's command, CI).
    Most of them start the CLI in a fresh process, which costs seconds for the imports alone."""
    seen: set[tuple[str, str]] = set()
    for item in items:
        if getattr(item, "callspec", None) is None or item.get_closest_marker("slow"):
            continue
        family = (item.path.name, item.originalname)
        if family in seen:
            item.add_marker(pytest.mark.slow)
        seen.add(family)
