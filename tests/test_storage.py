"""Searches shared by several workers through Optuna's storage (journal, sqlite, a real PostgreSQL server), the
uniform first trial run once, and storage URLs: bad ones, and passwords never shown."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState
from sqlalchemy.engine import make_url
from test_postgres import postgres_url  # noqa: F401 (a fixture: the server the postgresql case runs on)

from hwprune.search import SearchSpace, StudyPlace, on_target, open_storage, redact_url, scrub_secrets, search

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


def worker(tmp: Path, name: str, storage: str, *extra: str) -> subprocess.Popen:
    """A `hwprune` process writing to OUT=tmp/name, its stdout and stderr to tmp/name.log (a file, not a
    pipe: a worker blocked on a full pipe would hold its trial and stall the other)."""
    with open(tmp / f"{name}.log", "w") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "hwprune", "--target", "jetson-nano", "--config", str(tmp / "hwprune.toml"),
             "--limit", "512", "--out", str(tmp / name), "--profiles-dir", str(tmp / "profiles"),
             "--cache-dir", str(tmp / "cache"), "--storage", storage, "--quiet", *extra],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["journal", "sqlite", "postgresql"])
def test_two_workers_share_one_search_without_duplicate_or_lost_trials(tmp_path, fashion_dir, scheme, request):
    (tmp_path / "hwprune.toml").write_text(CONFIG)
    path = tmp_path / ("shared.journal" if scheme == "journal" else "shared.db")
    url = {"journal": f"journal:{path}", "sqlite": f"sqlite:///{path}",
           "postgresql": request.getfixturevalue("postgres_url") if scheme == "postgresql" else ""}[scheme]
    # the second worker logs everything (--debug), so a password in any log line would show
    workers = {name: worker(tmp_path, name, url, *extra) for name, extra in (("w1", ()), ("w2", ("--debug",)))}
    for name, w in workers.items():
        assert w.wait(timeout=900) in (0, 10), (tmp_path / f"{name}.log").read_text()[-5000:]

    storage, _ = open_storage(url, tmp_path / "unused.journal")
    studies = optuna.get_all_study_names(storage)
    assert len(studies) == 2 and all(s.endswith(("-round1", "-round2")) for s in studies)
    ran_by: dict[str, int] = {}
    for name in studies:
        trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        assert len(complete) == TRIALS  # none lost, none extra
        assert len({t.number for t in complete}) == TRIALS
        assert sum(t.system_attrs.get("fixed_params") == dict.fromkeys(t.params, 1.0) for t in complete) == 1
        # anything else is a trial a worker gave up as surplus before evaluating it
        assert all(t.state == TrialState.PRUNED for t in trials if t.state != TrialState.COMPLETE)
        for t in complete:
            ran_by[t.user_attrs["worker"]] = ran_by.get(t.user_attrs["worker"], 0) + 1
    assert len(ran_by) == 2, ran_by  # both workers ran trials of the searches
    if scheme == "postgresql":  # the password is in no message, log line or output file
        password = make_url(url).password
        written = [f for f in tmp_path.rglob("*") if f.is_file()]
        assert {"w1.log", "w2.log", "report.json", "report.md", "model.onnx", "run.json"} <= {f.name for f in written}
        assert [f for f in written if password.encode() in f.read_bytes()] == []
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


DENSE = {"a": 64, "b": 128, "c": 256}
UNIFORM = dict.fromkeys(DENSE, 1.0)


def predict(widths: dict[str, int]) -> float:
    return 0.01 + (3.0 * widths["a"] + widths["b"] + 0.5 * widths["c"]) / 1000


def evaluate(widths: dict[str, int]) -> float:
    return widths["a"] / 64 + 0.1 * widths["c"] / 256


def shared_search(storage: optuna.storages.BaseStorage, worker: str, trials: int = 6) -> None:
    space = SearchSpace(DENSE, DENSE, max_prune_rate=0.85, channel_multiple=8)
    search(space, predict, evaluate, 0.5 * predict(DENSE), trials, seed=0,
           place=StudyPlace(storage, "shared", shared=True, worker=worker, poll_s=0.01))


def uniform_runs(storage: optuna.storages.BaseStorage) -> list[TrialState]:
    """The states of the trials that took the uniform shares (enqueued, or suggested by the sampler)."""
    trials = optuna.load_study(study_name="shared", storage=storage).get_trials(deepcopy=False)
    return [t.state for t in trials if t.system_attrs.get("fixed_params", t.params) == UNIFORM]


@pytest.mark.parametrize("scheme", ["memory", "journal"])
def test_a_uniform_trial_another_worker_enqueued_is_not_enqueued_again(tmp_path, scheme):
    storage = (optuna.storages.InMemoryStorage() if scheme == "memory"
               else JournalStorage(JournalFileBackend(str(tmp_path / "s.journal"))))
    first = optuna.create_study(storage=storage, study_name="shared", direction="maximize")
    first.enqueue_trial(UNIFORM)  # worker 1 enqueued the uniform trial and has not started it yet
    shared_search(storage, "w2")
    assert uniform_runs(storage) == [TrialState.COMPLETE]  # today's code enqueued (and ran) it twice
    study = optuna.load_study(study_name="shared", storage=storage)
    assert len([t for t in study.trials if t.state == TrialState.COMPLETE]) == 6
    shared_search(storage, "w1")  # worker 1 comes back (or the run resumes): nothing more to run
    assert uniform_runs(storage) == [TrialState.COMPLETE] and len(study.trials) == 6


def test_workers_that_enqueued_the_uniform_trial_together_run_it_once():
    storage = optuna.storages.InMemoryStorage()
    first = optuna.create_study(storage=storage, study_name="shared", direction="maximize")
    first.enqueue_trial(UNIFORM)  # both workers checked before either enqueued (Optuna's own
    first.enqueue_trial(UNIFORM)  # skip_if_exists has the same race)
    shared_search(storage, "w2")
    assert uniform_runs(storage) == [TrialState.COMPLETE, TrialState.PRUNED]  # the copy was given up
    complete = [t for t in optuna.load_study(study_name="shared", storage=storage).trials
                if t.state == TrialState.COMPLETE]
    assert len(complete) == 6 and complete[0].number == 0


def test_a_killed_uniform_trial_is_enqueued_again():
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name="shared", direction="maximize")
    study.enqueue_trial(UNIFORM)
    storage.set_trial_state_values(study.trials[0]._trial_id, TrialState.RUNNING)  # popped, then killed
    space = SearchSpace(DENSE, DENSE, max_prune_rate=0.85, channel_multiple=8)
    target = 0.5 * predict(DENSE)
    outcome = search(space, predict, evaluate, target, 6, seed=0, place=StudyPlace(storage, "shared"))
    assert uniform_runs(storage) == [TrialState.FAIL, TrialState.COMPLETE]
    assert outcome.trials[0].widths == on_target(space, predict, target, UNIFORM)[1]


@pytest.mark.parametrize("url,shown,secret", [
    ("postgresql://user:s3cret@127.0.0.1:1/db", "postgresql://user:***@127.0.0.1:1/db", "s3cret"),
    ("postgresql://user:s3cret@db-host:no-port/db", "postgresql://user:***@db-host:no-port/db", "s3cret"),  # unparsable
    ("postgresql+psycopg2://user:s3%2Fcret@h/db", "postgresql+psycopg2://user:***@h/db", "s3/cret"),
    ("postgresql:///db?user=u&password=s3cret&host=/tmp", "postgresql:///db?user=u&password=***&host=/tmp",
     "s3cret"),
    ("postgresql://user:s3c?re/t@h/db?sslmode=require", "postgresql://user:***@h/db?sslmode=require", "s3c?re/t"),
    ("mysql://user:s3c@ret@h/db", "mysql://user:***@h/db", "s3c@ret"),
    ("sqlite:///tmp/a.db", "sqlite:///tmp/a.db", None),
    ("journal:/tmp/a:b@c.journal", "journal:/tmp/a:b@c.journal", None),
])
def test_storage_urls_are_shown_without_their_password(url, shown, secret):
    assert redact_url(url) == shown
    message = scrub_secrets(f"could not parse {url}: near '{secret}'", url)
    assert message == f"could not parse {shown}: near '{'***' if secret else None}'"


@pytest.mark.parametrize("url", ["postgresql://user:s3cret@127.0.0.1:1/db",  # nothing listens on port 1
                                 "postgresql://user:s3cret@127.0.0.1:no-port/db",
                                 "mysql://user:s3cret@127.0.0.1:1/db"])
def test_a_storage_url_password_never_reaches_the_terminal(tmp_path, url):
    result = subprocess.run([sys.executable, "-m", "hwprune", "--target", "jetson-nano", "--storage", url,
                             "--out", str(tmp_path / "o"), "--limit", "64", "--quiet"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr
    first, *rest = result.stderr.strip().splitlines()
    assert first.startswith("error: cannot open the Optuna storage '") and "user:***@127.0.0.1" in first
    assert len(rest) == 1 and rest[0].startswith("hint: ")
    assert "s3cret" not in result.stdout + result.stderr
