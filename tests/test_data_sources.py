"""Data without code: `[data] npz` arrays and `[data] image_folder` images, their splits, dtypes and refusals."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hwprune import factories
from hwprune.config import DataSpec, ProjectConfig, load_config
from hwprune.data import arrays, image_folder
from hwprune.errors import ConfigError, DataError

# ---------------------------------------------------------------- helpers


def _npz(path: Path, **named: np.ndarray) -> Path:
    np.savez(path, **named)
    return path


def _xy(n: int, shape: tuple[int, ...] = (1, 4, 4), classes: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x_train": rng.random((n, *shape), dtype=np.float32), "y_train": np.arange(n) % classes}


def _image(path: Path, size: tuple[int, int] = (6, 5), mode: str = "L", value: int = 0, fmt: str | None = None
           ) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = {"RGB": (value, 255 - value, 7), "RGBA": (value, 255 - value, 7, 255)}.get(mode, value)
    Image.new(mode, size, colour).save(path, format=fmt)
    return path


def _folder(root: Path, counts: dict[str, int], mode: str = "L", ext: str = ".png") -> Path:
    for name, n in counts.items():
        for i in range(n):
            _image(root / name / f"{i:03d}{ext}", mode=mode, value=(10 * i) % 256)
    return root


def _refused(error: type, match: str, fn, *args, names: str | Path | None = None):
    with pytest.raises(error, match=match) as info:
        fn(*args)
    assert info.value.exit_code == error.exit_code == (3 if error is DataError else 2)
    if names is not None:
        assert str(names) in info.value.message
    assert info.value.hint
    return info.value


# ---------------------------------------------------------------- npz: what loads


def test_npz_without_val_and_test_holds_out_seeded_disjoint_tenths(tmp_path, caplog):
    path = _npz(tmp_path / "d.npz", **_xy(50))
    with caplog.at_level(logging.WARNING):
        train, val, test = arrays.build(path, seed=3)
    assert (len(train), len(val), len(test)) == (40, 5, 5)
    assert "no test split given" in caplog.text and str(path) in caplog.text
    x, y = train[0]
    assert x.dtype == torch.float32 and x.shape == (1, 4, 4) and y.dtype == torch.int64 and y.dim() == 0
    seen = [tuple(d.x.flatten(1)[:, 0].tolist()) for d in (train, val, test)]
    assert len(set().union(*map(set, seen))) == 50  # disjoint and complete
    again = arrays.build(path, seed=3)
    assert all(torch.equal(a.x, b.x) and torch.equal(a.y, b.y) for a, b in zip((train, val, test), again))
    other = arrays.build(path, seed=4)
    assert not torch.equal(val.x, other[1].x)


def test_npz_given_val_and_test_are_used_as_given(tmp_path, caplog):
    named = _xy(12) | {"x_val": np.full((3, 1, 4, 4), 0.5), "y_val": np.array([0, 1, 2]),
                       "x_test": np.full((2, 1, 4, 4), 0.25, dtype=np.float16), "y_test": np.array([2, 2])}
    with caplog.at_level(logging.WARNING):
        train, val, test = arrays.build(_npz(tmp_path / "d.npz", **named), seed=0)
    assert (len(train), len(val), len(test)) == (12, 3, 2)
    assert "no test split" not in caplog.text
    assert torch.equal(val.y, torch.tensor([0, 1, 2])) and float(val.x[0, 0, 0, 0]) == 0.5
    assert test.x.dtype == torch.float32 and float(test.x.max()) == 0.25
    assert torch.equal(train.y, torch.from_numpy(named["y_train"]))  # nothing held out


def test_npz_dtypes_tokens_and_regression_targets(tmp_path):
    named = {"x_train": np.arange(40, dtype=np.int32).reshape(20, 2), "y_train": np.linspace(0, 1, 40).reshape(20, 2)}
    train, val, test = arrays.build(_npz(tmp_path / "d.npz", **named), seed=0)
    assert (len(train), len(val), len(test)) == (16, 2, 2)
    x, y = train[0]
    assert x.dtype == torch.int64 and y.dtype == torch.float32 and y.shape == (2,)
    named["x_train"] = named["x_train"].astype(np.uint8)
    named["y_train"] = np.linspace(0, 1, 20)
    x, y = arrays.build(_npz(tmp_path / "e.npz", **named), seed=0)[0][0]
    assert x.dtype == torch.int64 and y.dtype == torch.float32 and y.dim() == 0


def test_npz_only_val_given_holds_out_test_only(tmp_path):
    named = _xy(30) | {"x_val": np.zeros((4, 1, 4, 4), np.float32), "y_val": np.zeros(4, np.int64)}
    train, val, test = arrays.build(_npz(tmp_path / "d.npz", **named), seed=0)
    assert (len(train), len(val), len(test)) == (27, 4, 3)


def test_npz_smallest_training_set_still_splits(tmp_path):
    train, val, test = arrays.build(_npz(tmp_path / "d.npz", **_xy(3)), seed=0)
    assert (len(train), len(val), len(test)) == (1, 1, 1)
    _refused(DataError, "too few", arrays.build, _npz(tmp_path / "e.npz", **_xy(2)), 0, names=tmp_path / "e.npz")


# ---------------------------------------------------------------- npz: what is refused


@pytest.mark.parametrize("named,match,array", [
    ({"y_train": np.zeros(3, int)}, "required array 'x_train' is missing .*has: y_train", "x_train"),
    ({"x_train": np.zeros((3, 2))}, "'y_train' is missing", "y_train"),
    (_xy(5) | {"x_val": np.zeros((2, 1, 4, 4))}, "'x_val' is given without 'y_val'", "x_val"),
    (_xy(5) | {"y_test": np.zeros(2, int)}, "'y_test' is given without 'x_test'", "y_test"),
    (_xy(5) | {"x_valid": np.zeros((2, 1, 4, 4))}, "unknown array 'x_valid'", "x_valid"),
    ({"x_train": np.zeros((4, 2)), "y_train": np.zeros(3, int)}, "'x_train' has 4 samples but 'y_train' has 3",
     "x_train"),
    ({"x_train": np.zeros((0, 2)), "y_train": np.zeros(0, int)}, "'x_train' is empty", "x_train"),
    ({"x_train": np.zeros((3, 0)), "y_train": np.zeros(3, int)}, "'x_train' is empty", "x_train"),
    ({"x_train": np.zeros(3), "y_train": np.zeros(3, int)}, "at least one value per sample", "x_train"),
    ({"x_train": np.zeros((3, 2)), "y_train": np.zeros((3, 1), int)}, "integer y .* must be 1-D", "y_train"),
    ({"x_train": np.zeros((3, 2)), "y_train": np.zeros((3, 1, 1))}, "must be 1-D .* or 2-D", "y_train"),
    ({"x_train": np.array([[0.0], [np.nan], [1.0]]), "y_train": np.zeros(3, int)}, "non-finite .* sample 1",
     "x_train"),
    ({"x_train": np.zeros((3, 1)), "y_train": np.array([0.0, np.inf, 1.0])}, "non-finite", "y_train"),
    ({"x_train": np.zeros((3, 1)), "y_train": np.array([0, -2, 1])}, "negative class index .*-2 in sample 1",
     "y_train"),
    ({"x_train": np.array([["a"], ["b"], ["c"]]), "y_train": np.zeros(3, int)}, "dtype <U1", "x_train"),
    ({"x_train": np.zeros((3, 1), bool), "y_train": np.zeros(3, int)}, "dtype bool", "x_train"),
    (_xy(5) | {"x_val": np.zeros((2, 1, 4, 5)), "y_val": np.zeros(2, int)},
     r"'x_val' samples have shape \(1, 4, 5\) but 'x_train' samples have \(1, 4, 4\)", "x_val"),
    (_xy(5) | {"x_test": np.zeros((2, 1, 4, 4), int), "y_test": np.zeros(2, int)},
     "'x_test' holds integers .* but 'x_train' holds floats", "x_test"),
])
def test_npz_bad_arrays_are_named_with_the_file(tmp_path, named, match, array):
    path = _npz(tmp_path / "bad.npz", **named)
    error = _refused(DataError, match, arrays.build, path, 0, names=path)
    assert array in error.message


def test_npz_object_arrays_are_never_unpickled(tmp_path):
    path = _npz(tmp_path / "obj.npz", x_train=np.array([[1], ["a"]], dtype=object), y_train=np.zeros(2, int))
    _refused(DataError, "'x_train' holds Python objects", arrays.build, path, 0, names=path)


def test_npz_pickle_and_single_npy_and_damaged_files(tmp_path):
    pickled = tmp_path / "pickled.npz"
    pickled.write_bytes(pickle.dumps({"x_train": [1, 2]}))
    _refused(DataError, "pickled data, which is never loaded", arrays.build, pickled, 0, names=pickled)
    single = tmp_path / "single.npz"
    np.save(tmp_path / "single.npy", np.zeros(3))
    single.write_bytes((tmp_path / "single.npy").read_bytes())
    _refused(DataError, "single .npy array", arrays.build, single, 0, names=single)
    whole = _npz(tmp_path / "whole.npz", **_xy(20)).read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(whole[:len(whole) // 2])
    _refused(DataError, "cannot read", arrays.build, truncated, 0, names=truncated)
    flipped = tmp_path / "flipped.npz"
    raw = bytearray(whole)
    raw[raw.find(b"\x93NUMPY", raw.find(b"x_train.npy")) + 200] ^= 0xFF  # inside x_train's values: CRC fails
    flipped.write_bytes(bytes(raw))
    _refused(DataError, "'x_train' is corrupt", arrays.build, flipped, 0, names=flipped)
    text = tmp_path / "text.npz"
    text.write_text("x_train,y_train\n1,2\n")
    _refused(DataError, "cannot read", arrays.build, text, 0, names=text)


def test_npz_missing_file_and_folder(tmp_path):
    _refused(DataError, "file not found", arrays.build, tmp_path / "none.npz", 0, names=tmp_path / "none.npz")
    _refused(DataError, "is a folder", arrays.build, tmp_path, 0, names=tmp_path)


# ---------------------------------------------------------------- image folder: what loads


def test_image_folder_grayscale_classes_in_sorted_order_stratified_splits(tmp_path, caplog):
    root = _folder(tmp_path / "imgs", {"dog": 20, "cat": 10, "ant": 10})
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    with caplog.at_level(logging.WARNING):
        train, val, test = image_folder.build(root, seed=1)
    assert "skipped 1 file" in caplog.text and "notes.txt" in caplog.text and "no test split given" in caplog.text
    assert train.classes == val.classes == test.classes == ("ant", "cat", "dog")
    assert (len(train), len(val), len(test)) == (32, 4, 4)
    assert sorted(val.labels.tolist()) == [0, 1, 2, 2] and sorted(test.labels.tolist()) == [0, 1, 2, 2]  # stratified
    x, y = val[0]
    assert x.shape == (1, 5, 6) and x.dtype == torch.float32 and 0 <= float(x.min()) <= float(x.max()) <= 1
    assert isinstance(y, int)
    again = image_folder.build(root, seed=1)
    assert all(torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
               for a, b in zip((train, val, test), again))
    assert train.augment and not val.augment and not test.augment


def test_image_folder_pixels_are_decoded_exactly(tmp_path):
    root = tmp_path / "imgs"
    _image(root / "a" / "0.png", mode="L", value=51)
    _image(root / "b" / "0.png", mode="L", value=255)
    _image(root / "b" / "1.png", mode="L", value=0)
    images = image_folder.load_images((root / "a" / "0.png", root / "b" / "0.png"))
    assert images.dtype == torch.uint8 and images.shape == (2, 1, 5, 6)
    assert images[0].unique().tolist() == [51] and images[1].unique().tolist() == [255]


def test_image_folder_rgb_jpeg_bmp_webp_and_palette_become_three_channels(tmp_path):
    root = tmp_path / "imgs"
    _image(root / "a" / "0.jpg", mode="RGB", value=200, fmt="JPEG")
    _image(root / "a" / "1.JPEG", mode="RGB", value=100, fmt="JPEG")
    _image(root / "b" / "0.bmp", mode="RGB", value=10)
    _image(root / "b" / "1.webp", mode="RGBA", value=50)
    _image(root / "c" / "0.png", mode="P", value=3)
    _image(root / "c" / "1.png", mode="RGB", value=3)
    train, val, test = image_folder.build(root, seed=0)
    assert train.classes == ("a", "b", "c") and (len(train), len(val), len(test)) == (4, 1, 1)
    assert train.images.shape[1:] == (3, 5, 6)
    x, _ = test[0]
    assert x.shape == (3, 5, 6) and x.dtype == torch.float32


def test_image_folder_split_subfolders_are_used_as_given(tmp_path, caplog):
    root = tmp_path / "imgs"
    _folder(root / "train", {"a": 3, "b": 3})
    _folder(root / "val", {"a": 1, "b": 2})
    _folder(root / "test", {"a": 2, "b": 1})
    with caplog.at_level(logging.WARNING):
        train, val, test = image_folder.build(root, seed=0)
    assert "no test split" not in caplog.text
    assert (len(train), len(val), len(test)) == (6, 3, 3)
    assert val.labels.tolist() == [0, 1, 1] and test.labels.tolist() == [0, 0, 1]
    assert train.classes == ("a", "b")


def test_image_folder_train_only_subfolder_holds_out_val_and_test(tmp_path):
    root = tmp_path / "imgs"
    _folder(root / "train", {"a": 10, "b": 10})
    train, val, test = image_folder.build(root, seed=0)
    assert (len(train), len(val), len(test)) == (16, 2, 2)
    assert sorted(val.labels.tolist()) == [0, 1]


# ---------------------------------------------------------------- image folder: what is refused


def test_image_folder_missing_or_empty(tmp_path):
    _refused(DataError, "does not exist", image_folder.build, tmp_path / "none", 0, names=tmp_path / "none")
    (tmp_path / "file").write_text("x")
    _refused(DataError, "is not a folder", image_folder.build, tmp_path / "file", 0, names=tmp_path / "file")
    (tmp_path / "empty").mkdir()
    _refused(DataError, "no class subfolders", image_folder.build, tmp_path / "empty", 0, names=tmp_path / "empty")
    root = _folder(tmp_path / "imgs", {"a": 3})
    (root / "b").mkdir()
    (root / "b" / "readme.txt").write_text("no images here")
    _refused(DataError, "class folder 'b' holds no images", image_folder.build, root, 0, names=root / "b")


@pytest.mark.parametrize("damage,match", [
    (lambda p: p.write_bytes(b"definitely not a PNG"), "cannot decode the image"),
    (lambda p: p.write_bytes(p.read_bytes()[:len(p.read_bytes()) // 2]), "truncated"),
])
def test_image_folder_corrupt_or_truncated_image_is_named(tmp_path, damage, match):
    root = _folder(tmp_path / "imgs", {"a": 3, "b": 3})
    bad = root / "b" / "001.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (5, 6), dtype=np.uint8)).save(bad)
    damage(bad)
    _refused(DataError, match, image_folder.build, root, 0, names=bad)


def test_image_folder_truncated_jpeg_is_named(tmp_path):
    root = _folder(tmp_path / "imgs", {"a": 3, "b": 3})
    bad = root / "a" / "big.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (5, 6), dtype=np.uint8)).save(bad, quality=95)
    bad.write_bytes(bad.read_bytes()[:-40])
    _refused(DataError, "cannot decode", image_folder.build, root, 0, names=bad)


def test_image_folder_mixed_sizes_name_the_file_and_both_sizes(tmp_path):
    root = _folder(tmp_path / "imgs", {"a": 2, "b": 2})
    odd = _image(root / "b" / "zz.png", size=(7, 5))
    error = _refused(DataError, "all images must have one size", image_folder.build, root, 0, names=odd)
    assert "7×5" in error.message and "6×5" in error.message and str(root / "a" / "000.png") in error.message


def test_image_folder_mixed_gray_and_colour_is_refused(tmp_path):
    root = _folder(tmp_path / "imgs", {"a": 2, "b": 2})
    colour = _image(root / "b" / "zz.png", mode="RGB", value=9)
    _refused(DataError, "grayscale or all colour", image_folder.build, root, 0, names=colour)


def test_image_folder_sixteen_bit_images_are_refused(tmp_path):
    root = _folder(tmp_path / "imgs", {"a": 2, "b": 2})
    deep = root / "b" / "zz.png"
    Image.fromarray(np.zeros((5, 6), dtype=np.uint16)).save(deep)
    _refused(DataError, "not supported", image_folder.build, root, 0, names=deep)


def test_image_folder_split_folders_with_different_classes(tmp_path):
    root = tmp_path / "imgs"
    _folder(root / "train", {"a": 3, "b": 3})
    _folder(root / "val", {"a": 1, "c": 1})
    error = _refused(DataError, "class folders differ", image_folder.build, root, 0, names=root / "val")
    assert "missing: b" in error.message and "extra: c" in error.message


def test_image_folder_split_folder_beside_class_folders(tmp_path):
    root = tmp_path / "imgs"
    _folder(root / "train", {"a": 3})
    _folder(root, {"b": 3})
    _refused(DataError, "also 'b/'", image_folder.build, root, 0, names=root)


# ---------------------------------------------------------------- wiring: config and dispatch


def _config(tmp_path: Path, data: str, input_shape: str = "[1, 1, 4, 4]") -> Path:
    path = tmp_path / "hwprune.toml"
    path.write_text(f'[model]\nfactory = "example-cnn"\ninput_shape = {input_shape}\n\n[data]\n{data}\n')
    return path


def test_npz_through_the_config_and_build_data(tmp_path, caplog):
    (tmp_path / "data").mkdir()
    _npz(tmp_path / "data" / "d.npz", **_xy(20))
    config = load_config(_config(tmp_path, 'npz = "data/d.npz"'))
    assert config.data.npz == "data/d.npz" and config.data.sources() == ["npz"]
    with caplog.at_level(logging.WARNING):
        train, val, test = factories.build_data(config.data, config.base_dir, "ignored", config.seed)
    assert "--data-dir ignored is for a data factory" in caplog.text
    assert (len(train), len(val), len(test)) == (16, 2, 2)
    factories.check_samples((train, val, test), config.model.input_specs, factories.describe_data(config.data))
    with pytest.raises(ConfigError, match=r"does not match the data") as info:
        factories.check_samples((train, val, test), ProjectConfig().model.input_specs,
                                factories.describe_data(config.data))
    assert "input_shape = [1, 1, 4, 4]" in info.value.hint


def test_image_folder_through_the_config_with_an_absolute_path(tmp_path):
    root = _folder(tmp_path / "elsewhere" / "imgs", {"a": 5, "b": 5}, mode="RGB")
    config = load_config(_config(tmp_path / "elsewhere", f'image_folder = "{root}"', "[1, 3, 5, 6]"))
    data = factories.build_data(config.data, config.base_dir, None, config.seed)
    assert [len(d) for d in data] == [8, 1, 1] and data[0].classes == ("a", "b")
    factories.check_samples(data, config.model.input_specs, factories.describe_data(config.data))


def test_relative_data_paths_resolve_from_the_config_folder_not_the_cwd(tmp_path, monkeypatch):
    (tmp_path / "project").mkdir()
    _npz(tmp_path / "project" / "d.npz", **_xy(10))
    config = load_config(_config(tmp_path / "project", 'npz = "d.npz"'))
    monkeypatch.chdir(tmp_path)
    assert len(factories.build_data(config.data, config.base_dir, None, 0)[0]) == 8
    config = load_config(_config(tmp_path / "project", 'npz = "missing.npz"'))
    _refused(DataError, "file not found", factories.build_data, config.data, config.base_dir, None, 0,
             names=tmp_path / "project" / "missing.npz")


@pytest.mark.parametrize("data,match", [
    ('npz = "d.npz"\nimage_folder = "imgs"', "sets npz and image_folder: set one data source"),
    ('factory = "my_data:build"\nnpz = "d.npz"', "sets factory and npz: set one data source"),
    ('factory = "my_data:build"\nimage_folder = "imgs"', "sets factory and image_folder: set one"),
    ('npz = "d.npz"\ndata_dir = "somewhere"', "data_dir is for a data factory, not for \\[data\\] npz"),
])
def test_more_than_one_data_source_is_a_config_error(tmp_path, data, match):
    path = _config(tmp_path, data)
    _refused(ConfigError, match, load_config, path, names=path)


def test_the_factory_is_still_the_default_source(tmp_path):
    assert DataSpec().sources() == []
    assert factories.describe_data(DataSpec()) == "factory 'hwprune.data.fashion_mnist:build'"
    (tmp_path / "tiny_data.py").write_text(
        "import torch\n"
        "def build(seed=0):\n"
        "    ds = [(torch.zeros(1, 4, 4), 0)] * 3\n"
        "    return ds, ds, ds\n")
    config = load_config(_config(tmp_path, 'factory = "tiny_data:build"'))
    assert config.data.sources() == ["factory"]
    data = factories.build_data(config.data, config.base_dir, None, 0)
    assert [len(d) for d in data] == [3, 3, 3]
