"""Searches shared by several workers through Optuna's storage, and bad storage URLs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]
TRIALS = 12
CONFIG = f"""
seed = 5
[train]
epochs = 1
retrain_epochs = 1
batch_size = 64
[imp]
rounds = 2
[search]
trials = {TRIALS}
val_samples = 512
bn_batches = 2
"""


def worker(tmp: Path, name: str, storage: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "hwprune", "--target", "jetson-nano", "--config", str(tmp / "hwprune.toml"),
         "--limit", "512", "--out", str(tmp / name), "--profiles-dir", str(tmp / "profiles"),
         "--cache-dir", str(tmp / "cache"), "--storage", storage, "--quiet"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("scheme", ["journal", "sqlite"])
def test_two_workers_share_one_search_without_duplicate_or_lost_trials(tmp_path, fashion_dir, scheme):
    (tmp_path / "hwprune.toml").write_text(CONFIG)
    path = tmp_path / ("shared.journal" if scheme == "journal" else "shared.db")
    url = f"journal:{path}" if scheme == "journal" else f"sqlite:///{path}"
    workers = [worker(tmp_path, name, url) for name in ("w1", "w2")]
    for w in workers:
        _, stderr = w.communicate(timeout=600)
        assert w.returncode in (0, 10), stderr

    storage = JournalStorage(JournalFileBackend(str(path))) if scheme == "journal" else url
    studies = optuna.get_all_study_names(storage)
    assert len(studies) == 2 and all(s.endswith(("-round1", "-round2")) for s in studies)
    ran_by: dict[str, int] = {}
    for name in studies:
        trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        assert len(complete) == TRIALS  # none lost, none extra
        assert len({t.number for t in complete}) == TRIALS
        # anything else is a trial a worker gave up as surplus before evaluating it
        assert all(t.state == TrialState.PRUNED for t in trials if t.state != TrialState.COMPLETE)
        for t in complete:
            ran_by[t.user_attrs["worker"]] = ran_by.get(t.user_attrs["worker"], 0) + 1
    assert len(ran_by) == 2, ran_by  # both workers ran trials of the searches
    reports = [json.loads((tmp_path / name / "report.json").read_text()) for name in ("w1", "w2")]
    assert reports[0]["pruned"]["kept_channels"] == reports[1]["pruned"]["kept_channels"]
    assert reports[0]["pruned"]["accuracy"] == reports[1]["pruned"]["accuracy"]


@pytest.mark.parametrize("url,message", [
    ("ftp://host/db", "cannot open the Optuna storage 'ftp://host/db'"),
    ("not-a-url", "unsupported --storage 'not-a-url'"),
])
def test_a_bad_storage_url_is_a_one_line_error(tmp_path, url, message):
    result = subprocess.run([sys.executable, "-m", "hwprune", "--target", "jetson-nano", "--storage", url,
                             "--out", str(tmp_path / "o"), "--limit", "64", "--quiet"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr
    first, *rest = result.stderr.strip().splitlines()
    assert first.startswith(f"error: {message}") and rest and rest[0].startswith("hint: ")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "o" / "report.json").exists()
