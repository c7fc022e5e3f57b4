"""What users see: the CLI in a real terminal (a pseudo-terminal, so Rich draws its live display), in a narrow
one, and through a pipe. The README's main command runs with the live display; `--quiet` hides that path."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from rich.console import Console

from hwprune.cli import RichProgress
from hwprune.progress import stage

ROOT = Path(__file__).resolve().parents[1]
TARGET_NAMES = ("arm-cortex-a72", "jetson-nano", "x86-cpu")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


def in_terminal(args: list[str], columns: int = 100, cwd: Path = ROOT, timeout: float = 900) -> tuple[int, str]:
    """Run `python -m hwprune ARGS` with stdout and stderr on a pseudo-terminal `columns` wide; (exit code,
    everything it wrote, ANSI codes removed)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR", "TERM")}
    env["TERM"] = "xterm-256color"
    proc = subprocess.Popen([sys.executable, "-m", "hwprune", *args], cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while True:  # drain the terminal while the command runs, or it blocks once the buffer is full
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the command exited and closed its side
                data = b""
            if not data and proc.poll() is not None:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"hwprune {' '.join(args)} did not finish in {timeout} s")
    os.close(master)
    return proc.wait(), ANSI.sub("", b"".join(chunks).decode("utf-8", "replace"))


def test_progress_survives_transient_lasting_and_open_ended_stages():
    """The crash the README's command met: closing a stage after a transient one had been removed."""
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    with RichProgress(console) as progress:
        with stage(progress, "measuring latency table", 3, transient=True) as bar:
            bar.advance(3)
        with stage(progress, "calibrating latency model on 9 networks", None):
            progress.note("a note while bars are live [/b]")
        with stage(progress, "round 1 search [x86-cpu]", 2) as bar:
            bar.advance(2, "best proxy acc 0.812 [/i]")
    text = ANSI.sub("", out.getvalue())
    assert "calibrating latency model on 9 networks" in text and "[/b]" in text and "[/i]" in text
    assert "measuring latency table" not in text.splitlines()[-1]  # transient: gone at the end


def test_targets_in_a_narrow_terminal_keeps_names_whole():
    code, text = in_terminal(["targets"], columns=60)
    assert code == 0, text
    assert "Traceback" not in text
    for name in TARGET_NAMES:
        assert name in text, text


def test_targets_through_a_pipe_prints_whole_lines_for_grep():
    result = subprocess.run([sys.executable, "-m", "hwprune", "targets"], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "40"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for name in TARGET_NAMES:
        line = next(line for line in lines if line.startswith(name + " "))
        assert "2x speedup over dense" in line and "ONNX Runtime" in line  # one target, one whole line


def test_targets_shows_markup_in_a_description_as_text(tmp_path):
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets" / "odd.toml").write_text(
        'schema = 1\nname = "odd"\ndescription = "[/b] bold [red]claims\\nsecond line"\nprofile = "odd"\n'
        'providers = ["CPUExecutionProvider"]\nbudget = { ms = 1.0 }\n')
    code, text = in_terminal(["targets", "--targets-dir", str(tmp_path / "targets")], columns=200)
    assert code == 0 and "Traceback" not in text, text
    assert "[/b] bold [red]claims second line" in text
    piped = subprocess.run([sys.executable, "-m", "hwprune", "targets", "--targets-dir", str(tmp_path / "targets")],
                           cwd=ROOT, capture_output=True, text=True)
    assert piped.returncode == 0, piped.stderr
    assert [line for line in piped.stdout.splitlines() if line.startswith("odd ")][0].endswith(
        "[/b] bold [red]claims second line")


def test_an_error_before_the_first_stage_prints_only_its_two_lines(tmp_path):
    """With the live display on (no --quiet) and stderr a pipe, Rich's stop once left a blank line first."""
    (tmp_path / "a-file").write_text("")
    result = subprocess.run([sys.executable, "-m", "hwprune", "--target", "x86-cpu", "--out",
                             str(tmp_path / "a-file" / "out")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 9
    lines = result.stderr.split("\n")
    assert lines[0].startswith("error: ") and lines[1].startswith("hint: ") and lines[2:] == [""], result.stderr
