"""The house rules of docs/architecture.md, checked: imports point down the layers, each heavy library enters
through one module, nobody imports another module's private names, reading reports needs no torch, and the
public API resolves."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import hwprune
from hwprune import paths

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "hwprune"

# Layers, top to bottom (docs/architecture.md): a module imports its own layer or lower ones, never higher.
LAYERS = {
    "entry": ["hwprune.__main__", "hwprune.cli"],
    "orchestration": ["hwprune.pipeline"],
    "stages": ["hwprune.dense", "hwprune.imp", "hwprune.measure", "hwprune.validate", "hwprune.compare"],
    "engines": ["hwprune.latency", "hwprune.search", "hwprune.train", "hwprune.prune.graph", "hwprune.export",
                "hwprune.numerics", "hwprune.profiles", "hwprune.analytic", "hwprune.onnxgraph", "hwprune.runtime",
                "hwprune.timing", "hwprune.device", "hwprune.remote", "hwprune.agent",
                "hwprune.cache", "hwprune.state", "hwprune.factories", "hwprune.report", "hwprune.objective",
                "hwprune.weights", "hwprune.inputs", "hwprune.compute", "hwprune.data.fashion_mnist",
                "hwprune.data.arrays", "hwprune.data.image_folder", "hwprune.data.splits",
                "hwprune.models.example_cnn", "hwprune.models.resnet", "hwprune.models.mobilenet_v2",
                "hwprune.models.lenet"],
    "foundations": ["hwprune", "hwprune.config", "hwprune.targets", "hwprune.records", "hwprune.progress",
                    "hwprune.prune.masks", "hwprune.faults", "hwprune.atomic", "hwprune.provenance", "hwprune.paths",
                    "hwprune.errors", "hwprune.models", "hwprune.data", "hwprune.prune", "hwprune.agent_args",
                    "hwprune.agent_file"],
}
RANK = {module: rank for rank, modules in enumerate(reversed(LAYERS.values())) for module in modules}
# Each heavy library (or the part of one) enters hwprune through exactly one module.
GATEWAYS = {"optuna": "hwprune.search", "onnxruntime": "hwprune.timing", "torch_pruning": "hwprune.prune.graph",
            "torch.onnx": "hwprune.export", "sqlalchemy": "hwprune.search", "matplotlib": "hwprune.compare",
            "jsonschema": "hwprune.report", "PIL": "hwprune.data.image_folder"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module imported, names taken from it) for every import statement, at any depth (lazy imports too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


def _hwprune_target(module: str, names: list[str]) -> list[str]:
    """The hwprune modules an import statement loads (`from hwprune import x` loads hwprune.x when it is one)."""
    if module == "hwprune":
        return [f"hwprune.{n}" if f"hwprune.{n}" in RANK else "hwprune" for n in names] or ["hwprune"]
    return [module]


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer():
    assert sorted(_module_name(p) for p in SOURCES) == sorted(RANK)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: _module_name(p))
def test_imports_point_down_the_layers(path):
    me = _module_name(path)
    for module, names in _imports(path):
        if not module.startswith("hwprune"):
            continue
        for target in _hwprune_target(module, names):
            assert RANK[target] <= RANK[me], f"{me} (layer {RANK[me]}) imports {target} (layer {RANK[target]})"


def test_heavy_libraries_enter_through_one_module():
    for path in SOURCES:
        me = _module_name(path)
        for module, _ in _imports(path):
            for library, gateway in GATEWAYS.items():
                if module == library or module.startswith(library + "."):
                    assert me == gateway, f"{me} imports {module}; only {gateway} may"


def test_no_private_names_cross_modules():
    """Benchmarks, examples, tests' neighbours and the package take only public names from hwprune."""
    for path in [*SOURCES, *sorted((ROOT / "benchmarks").glob("*.py")), *sorted((ROOT / "examples").rglob("*.py"))]:
        for module, names in _imports(path):
            if module.startswith("hwprune"):
                private = [n for n in names if n.startswith("_") and n != "__version__"]
                assert not private, f"{path.relative_to(ROOT)} imports {private} from {module}"


def test_public_api_resolves():
    for name in hwprune.__all__:
        assert getattr(hwprune, name) is not None, name
    assert hwprune.read_report.__module__ == "hwprune.report"
    with pytest.raises(AttributeError):
        hwprune.no_such_name  # noqa: B018


def test_builtin_targets_and_profiles_are_package_data():
    assert {p.stem for p in paths.BUILTIN_TARGETS.glob("*.toml")} == {"x86-cpu", "arm-cortex-a72", "jetson-nano"}
    assert {p.stem for p in paths.BUILTIN_PROFILES.glob("*.json")} == {"arm-cortex-a72", "jetson-nano"}
    assert paths.BUILTIN_TARGETS.is_relative_to(PACKAGE) and paths.BUILTIN_PROFILES.is_relative_to(PACKAGE)


HEAVY = ("torch", "onnx", "onnxruntime", "optuna", "torch_pruning")


def test_reading_and_comparing_reports_never_imports_torch(tmp_path):
    """`hwprune compare` only reads JSON: it must not pay for (or need) torch, onnx, ONNX Runtime or Optuna."""
    from test_bad_input import _report  # a valid report, as hwprune writes them
    for name in ("a", "b"):
        (tmp_path / f"{name}.json").write_text(json.dumps({**_report(), "target": name}))
    probe = ("import sys\nfrom hwprune.cli import main\n"
             f"code = main(['compare', 'a.json', 'b.json', '--out', 'cmp'])\n"
             f"print(code, sorted(m for m in {HEAVY!r} if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "0 []", result.stdout + result.stderr
    assert (tmp_path / "cmp" / paths.COMPARISON_HTML).exists()


def test_import_hwprune_and_targets_listing_stay_light():
    probe = (f"import sys, hwprune\nfrom hwprune.cli import main\nmain(['targets'])\n"
             f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout


@pytest.mark.slow
def test_a_wheel_install_finds_its_targets_and_profiles(tmp_path):
    """`pip install .` (not editable) and `hwprune targets` from another folder: built-in targets and analytic
    profiles come from the package, not from a source checkout."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                    str(ROOT)], check=True, capture_output=True, timeout=600)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    # dependencies from this environment (a .pth line); hwprune itself only from the wheel
    deps = next(p for p in map(Path, sys.path) if p.name == "site-packages" and (p / "rich").is_dir())
    site = next((venv / "lib").glob("python*/site-packages"))
    (site / "deps.pth").write_text(f"{deps}\n")
    wheel = next(wheels.glob("hwprune-*.whl"))
    subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, timeout=600)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run([venv / "bin" / "hwprune", "targets"], cwd=elsewhere, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for name, kind in (("x86-cpu", "not measured yet"), ("arm-cortex-a72", "analytic"), ("jetson-nano", "analytic")):
        assert any(line.startswith(name + " ") and f"({kind})" in line for line in lines), result.stdout
    where = subprocess.run([venv / "bin" / "python", "-c", "import hwprune; print(hwprune.__file__)"], cwd=elsewhere,
                           capture_output=True, text=True, timeout=60).stdout
    assert str(site) in where and str(ROOT) not in where
