import gzip

import numpy as np
import pytest

from hwprune.data import fashion_mnist
from hwprune.errors import DataError


def _write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def _fake_dataset(folder, n_train=40, n_test=10):
    rng = np.random.default_rng(0)
    _write_idx(folder / "train-images-idx3-ubyte.gz", rng.integers(0, 255, (n_train, 28, 28)))
    _write_idx(folder / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, n_train))
    _write_idx(folder / "t10k-images-idx3-ubyte.gz", rng.integers(0, 255, (n_test, 28, 28)))
    _write_idx(folder / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, n_test))


def test_reads_idx_from_any_folder(tmp_path, monkeypatch):
    _fake_dataset(tmp_path)
    monkeypatch.setattr(fashion_mnist, "VAL_SIZE", 8)
    train, val, test = fashion_mnist.build(str(tmp_path))
    assert (len(train), len(val), len(test)) == (32, 8, 10)
    x, y = test[0]
    assert x.shape == (1, 28, 28) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and 0 <= y < 10


def test_environment_variable_points_at_data(tmp_path, monkeypatch):
    monkeypatch.setenv(fashion_mnist.ENV_VAR, str(tmp_path))
    assert fashion_mnist.resolve_dir(None) == tmp_path


def test_missing_data_says_how_to_install(tmp_path):
    with pytest.raises(DataError, match="not found") as info:
        fashion_mnist.build(str(tmp_path))
    assert "apt-get install -y dataset-fashion-mnist" in info.value.hint


def test_truncated_file_is_reported(tmp_path):
    _fake_dataset(tmp_path)
    raw = gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz").read()
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as fh:
        fh.write(raw[:-100])
    with pytest.raises(DataError, match="truncated"):
        fashion_mnist.build(str(tmp_path))


def test_real_fashion_mnist_split(fashion_dir):
    train, val, test = fashion_mnist.build(str(fashion_dir))
    assert (len(train), len(val), len(test)) == (55000, 5000, 10000)


def test_an_idx_header_with_an_unaddressable_empty_shape_is_a_data_error(tmp_path):
    """Found by Hypothesis: dimensions (0, 0, 2214592512, ...) hold 0 bytes, yet numpy cannot shape them."""
    from hwprune.data.fashion_mnist import read_idx
    from hwprune.errors import DataError
    path = tmp_path / "odd-idx3-ubyte"
    path.write_bytes(b"\x00\x00\x08\x04\x00\x00\x00\x00\x00\x00\x00\x00\x84\x00\x00\x00\xf8>\x0f\x84")
    with pytest.raises(DataError, match="no array can have"):
        read_idx(path)
