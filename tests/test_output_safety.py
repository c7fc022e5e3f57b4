"""What a user, or a shared machine, can do to the files hwprune writes: target files that name paths, links
planted under temp names, --force next to the user's own files, the umask, a full disk, two runs into one
folder, two runs growing one profile. Each test fails on the code before issue 13's fixes.
"""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli import TINY

from hwprune import atomic, cli, compare, paths, pipeline, profiles, runtime, validate
from hwprune.errors import ConfigError, OutputError, ProfileError
from hwprune.paths import STATE_DIR
from hwprune.runtime import RuntimeSettings
from hwprune.state import RunState
from hwprune.targets import load_target, parse_target, target_dirs

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--limit", "256", "--no-cache", "--quiet", "--profiles-dir", "profiles"]
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture
def workspace(tmp_path) -> Path:
    """A user's folder (tmp_path/ws) with a config and the Jetson Nano profile; tmp_path around it is 'outside'."""
    ws = tmp_path / "ws"
    (ws / "profiles").mkdir(parents=True)
    (ws / "profiles" / "jetson-nano.json").write_bytes((paths.BUILTIN_PROFILES / "jetson-nano.json").read_bytes())
    (ws / "hwprune.toml").write_text(TINY)
    return ws


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under `folder` (folders as None), with the bytes of the files."""
    return {str(p.relative_to(folder)): (None if p.is_dir() else p.read_bytes()) for p in sorted(folder.rglob("*"))}


def hwprune(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hwprune", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})


def one_error_line(stderr: str, *phrases: str) -> str:
    """stderr holds one 'error: …' line (with every phrase) and one 'hint: …' line, no traceback (log warnings
    such as the analytic profile's may come before)."""
    assert "Traceback" not in stderr
    lines = [line for line in stderr.strip().splitlines() if line.startswith(("error: ", "hint: "))]
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: "), stderr
    assert all(p in lines[0] for p in phrases), lines[0]
    return lines[1]


def target_toml(**keys: str) -> str:
    values = {"name": "mine", "profile": "jetson-nano", **keys}
    return ("schema = 1\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
            + 'providers = ["CPUExecutionProvider"]\nbudget = { speedup = 2.0 }\n')


# -- 1. a target's name and profile are plain names -------------------------------------------------------------

BAD_NAMES = ["../../victim", "/tmp/victim", "a/b", "a\\b", "", "..", ".hidden", "x..y", "x y", "-rf", "nul\x00"]


@pytest.mark.parametrize("key", ["name", "profile"])
@pytest.mark.parametrize("value", BAD_NAMES)
def test_target_name_and_profile_must_be_plain_names(key, value):
    data = {"schema": 1, "name": "mine", "profile": "jetson-nano", "providers": ["CPUExecutionProvider"],
            "budget": {"speedup": 2.0}, key: value}
    with pytest.raises(ConfigError, match=f"evil.toml: {key} must be a plain name") as info:
        parse_target(data, Path("evil.toml"))
    assert "[A-Za-z0-9][A-Za-z0-9._-]*" in info.value.message and info.value.hint


@pytest.mark.parametrize("value", ["x86-cpu", "pi4_b.v2", "A1"])
def test_plain_names_are_accepted(value):
    data = {"schema": 1, "name": value, "profile": value, "providers": ["CPUExecutionProvider"],
            "budget": {"speedup": 2.0}}
    target = parse_target(data, Path("t.toml"))
    assert (target.name, target.profile) == (value, value)


@pytest.mark.parametrize("key", ["name", "profile"])
def test_target_file_cannot_point_the_run_outside(workspace, key):
    """Before: name = "../../victim" made out/../../victim the output folder and --force deleted its .hwprune;
    profile = "../../victim/p" put the profile there."""
    victim = workspace.parent / "victim"
    (victim / STATE_DIR).mkdir(parents=True)
    (victim / STATE_DIR / "run.json").write_text('{"fingerprint": "theirs", "stages": []}')
    (victim / "precious.txt").write_text("keep me")
    (workspace / "evil.toml").write_text(target_toml(**{key: "../../victim" if key == "name" else "../../victim/p"}))
    before = tree(workspace.parent)
    result = hwprune(workspace, "--target", "evil.toml", "--config", "hwprune.toml", "--force", *FAST)
    assert result.returncode == 2, result.stderr
    one_error_line(result.stderr, "evil.toml", key, "plain name", "[A-Za-z0-9][A-Za-z0-9._-]*")
    assert len(result.stderr.strip().splitlines()) == 2
    assert tree(workspace.parent) == before


# -- 2. temp files have fresh names: a link planted under the old fixed name is never followed ------------------

@pytest.fixture
def outside(tmp_path) -> Path:
    precious = tmp_path / "precious.bin"
    precious.write_bytes(b"not yours to overwrite")
    return precious


def test_write_probe_does_not_follow_a_planted_link(tmp_path, outside):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".hwprune-write-test").symlink_to(outside)
    pipeline.prepare_out_dir(out, force=False)
    assert outside.read_bytes() == b"not yours to overwrite"
    assert [p.name for p in out.iterdir()] == [".hwprune-write-test"]  # the probe left nothing behind


def _tiny_model():
    import onnx
    from onnx import helper
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_optimized_model_temp_does_not_follow_a_planted_link(tmp_path, outside):
    import onnx
    path = tmp_path / "model.optimized.onnx"
    (tmp_path / ".model.optimized.onnx.tmp").symlink_to(outside)
    level = validate.write_optimized(_tiny_model(), load_target("x86-cpu", target_dirs()), False, path)
    assert level == "basic" and outside.read_bytes() == b"not yours to overwrite"
    onnx.checker.check_model(onnx.load(str(path)))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.optimized.onnx.tmp", "model.optimized.onnx",
                                                          "precious.bin"]


def test_plot_temps_do_not_follow_planted_links(tmp_path, outside, monkeypatch):
    def plot(c, path):
        import matplotlib.pyplot as plt
        fig = plt.figure(figsize=(1, 1))
        fig.savefig(path)  # the format comes from the temp file's name: it must still end in .png
        plt.close(fig)
    for name in ("plot_channels", "plot_breakdown", "plot_accuracy_latency"):
        monkeypatch.setattr(compare, name, plot)
    links = [tmp_path / f".cmp-{n}.png.tmp.png" for n in ("channels", "latency_breakdown", "accuracy_latency")]
    for link in links:
        link.symlink_to(outside)
    paths = compare.render_plots(None, tmp_path, "cmp")
    assert outside.read_bytes() == b"not yours to overwrite"
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in paths.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [*(link.name for link in links), *(p.name for p in paths.values()), "precious.bin"])


# -- 3. --force removes only what hwprune wrote -------------------------------------------------------------------

def test_force_keeps_the_users_files_in_the_state_folder(tmp_path):
    out = tmp_path / "out"
    state, _ = RunState.open(out, "a" * 24, force=False)
    state.save("round-1.pt", {"x": 1})
    state.journal().write_text("study\n")
    (state.dir / "notes.txt").write_text("mine")
    (state.dir / "mine.pt").write_bytes(b"my weights")
    state.finish()  # drops hwprune's weight files only
    assert not (state.dir / "round-1.pt").exists() and (state.dir / "mine.pt").read_bytes() == b"my weights"
    state.save("round-2.pt", {"x": 2})
    state.release()

    state, resuming = RunState.open(out, "b" * 24, force=True)
    assert not resuming and state.stages() == []
    assert sorted(p.name for p in state.dir.iterdir()) == ["lock", "mine.pt", "notes.txt", "run.json"]
    assert (state.dir / "notes.txt").read_text() == "mine"
    state.release()


@pytest.mark.parametrize("text", ["{not json", "[]", '{"fingerprint": "x"}'])
def test_corrupt_run_state_is_refused_then_cleared_by_force(tmp_path, text):
    from hwprune.config import load_config
    out = tmp_path / "out"
    (out / STATE_DIR).mkdir(parents=True)
    (out / STATE_DIR / "run.json").write_text(text)
    (out / STATE_DIR / "round-1.pt").write_bytes(b"an older hwprune's")
    (out / STATE_DIR / "notes.txt").write_text("mine")
    config, target = load_config(None), load_target("jetson-nano", target_dirs())
    options = pipeline.RunOptions(out_dir=out, profiles_dir=tmp_path / "profiles")
    with pytest.raises(OutputError, match="unreadable run state") as info:
        pipeline.open_state(config, target, options)
    assert "--force" in info.value.hint
    forced = pipeline.RunOptions(out_dir=out, profiles_dir=tmp_path / "profiles", force=True)
    assert not pipeline.finished_here(config, target, forced)
    state = pipeline.open_state(config, target, forced)
    try:
        assert state.stages() == [] and state.info()["fingerprint"] == state.fingerprint
        assert sorted(p.name for p in state.dir.iterdir()) == ["lock", "notes.txt", "run.json"]
    finally:
        state.release()


def test_corrupt_run_state_through_the_cli(workspace):
    state_dir = workspace / "out" / "jetson-nano" / STATE_DIR
    state_dir.mkdir(parents=True)
    (state_dir / "run.json").write_text("{not json")
    result = hwprune(workspace, "--target", "jetson-nano", "--config", "hwprune.toml", *FAST)
    assert result.returncode == 9, result.stderr
    assert "--force" in one_error_line(result.stderr, "unreadable run state", "run.json")


# -- 4. modes follow the umask; the folder is synced --------------------------------------------------------------

@pytest.fixture
def umask():
    def set_mask(mask: int) -> None:
        os.umask(mask)
    old = os.umask(0o022)
    yield set_mask
    os.umask(old)


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_get_the_mode_open_would_give(tmp_path, umask, mask, mode):
    umask(mask)
    atomic.write_text(tmp_path / "report.json", "{}")
    with atomic.replacing(tmp_path / "plot.png") as tmp:
        tmp.write_bytes(b"png")
    assert stat.S_IMODE((tmp_path / "report.json").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "plot.png").stat().st_mode) == mode


def test_an_existing_files_mode_is_kept(tmp_path, umask):
    path = tmp_path / "report.json"
    path.write_text("old")
    path.chmod(0o640)
    atomic.write_text(path, "new")
    assert path.read_text() == "new" and stat.S_IMODE(path.stat().st_mode) == 0o640


def test_the_folder_is_synced_after_the_rename(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def fsync(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        return real(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    atomic.write_text(tmp_path / "a.txt", "x")
    assert synced == [False, True]


# -- 5. a full disk is an OutputError; the old file stays, the temp file goes --------------------------------------

def _fail(*args, **kwargs):
    raise ENOSPC


class _FullDiskFile:
    def __init__(self, fh):
        self._fh = fh

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()

    def write(self, data):
        raise ENOSPC


@pytest.mark.parametrize("where", ["write", "fsync", "replace"])
def test_full_disk_is_an_output_error_and_keeps_the_old_file(tmp_path, monkeypatch, where):
    path = tmp_path / "report.json"
    path.write_text("old")
    if where == "write":
        real = os.fdopen
        monkeypatch.setattr(os, "fdopen", lambda *a, **k: _FullDiskFile(real(*a, **k)))
    else:
        monkeypatch.setattr(os, where, _fail)
    with pytest.raises(OutputError) as info:
        atomic.write_text(path, "new")
    assert info.value.message == f"cannot write {path}: No space left on device"
    assert "free space" in info.value.hint and info.value.exit_code == 9
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_full_disk_while_a_writer_fills_a_temp_name(tmp_path):
    path = tmp_path / "plot.png"
    path.write_bytes(b"old")
    with pytest.raises(OutputError, match="No space left on device"):
        with atomic.replacing(path) as tmp:
            tmp.write_bytes(b"half")
            raise ENOSPC
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["plot.png"]


def test_full_disk_through_the_cli(workspace, monkeypatch, capsys):
    """In-process: the run's first write fails; exit 9, one line, the earlier report and state untouched."""
    out = workspace / "out" / "earlier"
    out.mkdir(parents=True)
    for name in ("model.onnx", "report.json", "report.md"):
        (out / name).write_text(f"earlier {name}")
    monkeypatch.chdir(workspace)
    before = tree(workspace)
    monkeypatch.setattr(os, "fsync", _fail)
    code = cli.main(["--target", "jetson-nano", "--config", "hwprune.toml", "--out", "out/earlier", "--force",
                     *FAST])
    assert code == 9
    one_error_line(capsys.readouterr().err, "cannot write", "No space left on device")
    after = tree(workspace)
    assert {k: after.get(k) for k in before} == before
    assert not [k for k in after if k not in before and Path(k).name != "lock" and after[k] is not None]


@pytest.mark.slow
def test_full_disk_while_writing_the_report(workspace, monkeypatch, capsys):
    """A whole tiny run whose report.json cannot be written: exit 9, the earlier report intact, the folder
    unlocked again."""
    out = workspace / "out" / "earlier"
    out.mkdir(parents=True)
    (out / "report.json").write_text("earlier report")
    monkeypatch.chdir(workspace)
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name == "report.json":
            raise ENOSPC
        return real(src, dst, *args, **kwargs)
    monkeypatch.setattr(os, "replace", replace)
    code = cli.main(["--target", "jetson-nano", "--config", "hwprune.toml", "--out", "out/earlier", "--force",
                     *FAST])
    assert code == 9
    one_error_line(capsys.readouterr().err, "report.json", "No space left on device")
    assert (out / "report.json").read_text() == "earlier report"
    assert not [p for p in out.iterdir() if p.name.startswith(".report.json")]
    state, _ = RunState.open(out, "x" * 24, force=True)  # released
    state.release()


# -- 6. one run at a time per output folder ----------------------------------------------------------------------

def test_a_second_run_into_the_same_folder_is_refused(workspace):
    out = workspace / "out" / "busy"
    state, _ = RunState.open(out, "f" * 24, force=False)
    try:
        state.save("round-1.pt", {"x": 1})
        before = tree(workspace)
        result = hwprune(workspace, "--target", "jetson-nano", "--config", "hwprune.toml", "--out", "out/busy",
                         "--force", *FAST)
        assert result.returncode == 9, result.stderr
        hint = one_error_line(result.stderr, f"another hwprune run (pid {os.getpid()}) is writing out/busy")
        assert "wait" in hint
        assert tree(workspace) == before
    finally:
        state.release()
    again, _ = RunState.open(out, "f" * 24, force=False)  # free once released
    again.release()


def test_run_targets_holds_the_folders_until_the_caller_is_done(tmp_path, monkeypatch):
    """The CLI writes report.json while run_targets is suspended after a yield: the lock must still be held
    then, and be let go when the generator ends or is closed."""
    out = tmp_path / "out"

    def fake(config, targets, options, out_dirs, progress, states):
        states["t"], _ = RunState.open(out, "a" * 24, force=False)
        yield "outcome"
    monkeypatch.setattr(pipeline, "_run_targets", fake)

    def locked() -> bool:
        probe = atomic.FileLock(out / STATE_DIR / "lock")
        free = probe.acquire(wait=False)
        probe.release()
        return not free

    outcomes = pipeline.run_targets(None, [], None, {})
    assert next(outcomes) == "outcome" and locked()
    assert list(outcomes) == [] and not locked()
    outcomes = pipeline.run_targets(None, [], None, {})
    next(outcomes)
    outcomes.close()  # the CLI closes it when an error leaves its loop
    assert not locked()


def test_a_failed_open_lets_the_folder_go(tmp_path):
    out = tmp_path / "out"
    first, _ = RunState.open(out, "a" * 24, force=False)
    first.save("round-1.pt", {"x": 1})
    first.mark("round1")
    first.release()
    with pytest.raises(OutputError, match="unfinished run with other settings"):
        RunState.open(out, "b" * 24, force=False)
    again, resuming = RunState.open(out, "a" * 24, force=False)
    assert resuming
    again.release()


# -- 7. runs sharing a profile never lose each other's kernels ---------------------------------------------------

CPU = RuntimeSettings(("CPUExecutionProvider",), 1, "all")


def _entry(ms: float) -> profiles.Entry:
    return profiles.Entry(ms, ms, 0.0, 5, "Conv")


def _profile_file(tmp_path) -> Path:
    path = tmp_path / "host.json"
    profiles.DeviceProfile("host", profiles.HostFingerprint.current(), CPU, runtime.version(),
                           {"kind": "measured", "host": "here"}, {}, entries={"k0": _entry(1.0)}, path=path).save()
    return path


def test_two_runs_saving_one_profile_keep_every_entry(tmp_path):
    path = _profile_file(tmp_path)
    a, b = profiles.DeviceProfile.load(path), profiles.DeviceProfile.load(path)
    a.entries["ka"] = _entry(2.0)
    a.calibrations["arch-a"] = profiles.Calibration(1.0, 0.1, 9, 3.0)
    b.entries["kb"] = _entry(3.0)
    b.entries["k0"] = _entry(1.5)  # re-measured: this object's value wins
    a.save()
    b.save()
    saved = profiles.DeviceProfile.load(path)
    assert set(saved.entries) == {"k0", "ka", "kb"} and saved.entries["k0"].median_ms == 1.5
    assert set(saved.calibrations) == {"arch-a"}
    assert set(b.entries) == {"k0", "ka", "kb"}  # the saving object learns the others' entries too


def test_a_profile_file_that_became_another_profile_is_not_overwritten(tmp_path):
    path = _profile_file(tmp_path)
    mine = profiles.DeviceProfile.load(path)
    data = json.loads(path.read_text())
    data["runtime"]["onnxruntime"] = "0.0.1"
    path.write_text(json.dumps(data))
    mine.entries["k1"] = _entry(1.0)
    with pytest.raises(ProfileError, match="now holds another profile"):
        mine.save()
    assert json.loads(path.read_text()) == data


def _save_many(path: str, tag: str, count: int) -> None:
    profile = profiles.DeviceProfile.load(Path(path))
    for i in range(count):
        profile.entries[f"{tag}{i}"] = _entry(float(i + 1))
        profile.save()


def test_two_processes_saving_one_profile_lose_nothing(tmp_path):
    path = _profile_file(tmp_path)
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_save_many, args=(str(path), tag, 25)) for tag in ("a", "b")]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0, 0]
    entries = profiles.DeviceProfile.load(path).entries
    assert set(entries) == {"k0", *(f"{t}{i}" for t in "ab" for i in range(25))}


def test_a_run_that_left_nothing_to_resume_does_not_block_other_settings(tmp_path):
    """A run that failed before its first stage (a bad model factory, say) leaves an empty state: after fixing
    the settings the user runs again without --force. A state with work in it is still refused."""
    out = tmp_path / "out"
    failed, _ = RunState.open(out, "a" * 24, force=False)
    failed.journal()  # listed, never written: no trial ran
    failed.release()
    fixed, resuming = RunState.open(out, "b" * 24, force=False)
    assert not resuming and fixed.info()["fingerprint"] == "b" * 24
    fixed.path("dense-k.training.pt").write_bytes(b"epoch 1")  # a dense-training checkpoint: work to keep
    fixed.release()
    with pytest.raises(OutputError, match="unfinished run with other settings"):
        RunState.open(out, "c" * 24, force=False)
