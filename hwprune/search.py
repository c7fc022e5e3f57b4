"""The per-round Optuna search over per-group prune rates: the only importer of optuna.

A trial proposes how the pruning is shared out between the coupled channel groups (a share per group);
one scale, found by bisection on the latency model, turns the shares into prune rates: the least pruning
along that direction whose predicted latency meets the round's target. Every trial is therefore a network
that uses the latency budget rather than one far below it or above it, and pays for the accuracy proxy.
Rates never fall below a group's current rate (masks only shrink) and kept channels are rounded to the
runtime's channel multiple. The first trial shares equally: the uniform baseline.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.util
import logging
import re
import time
import urllib.parse
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from hwprune import atomic, faults, paths
from hwprune.errors import ConfigError, SearchError
from hwprune.progress import NullProgress, Progress, stage
from hwprune.provenance import derive_seed
from hwprune.prune.masks import keep_count

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass(frozen=True)
class SearchSpace:
    dense_widths: dict[str, int]
    current_widths: dict[str, int]  # upper bound per group (previous round)
    max_prune_rate: float
    channel_multiple: int

    def low_rate(self, group: str) -> float:
        return 1.0 - self.current_widths[group] / self.dense_widths[group]

    def widths_for(self, rates: dict[str, float]) -> dict[str, int]:
        """Kept channels per group; rates are clamped to [current rate, max_prune_rate]."""
        return {g: keep_count(w, min(max(rates[g], self.low_rate(g)), self.max_prune_rate), self.channel_multiple,
                              self.current_widths[g])
                for g, w in self.dense_widths.items()}


@dataclass(frozen=True)
class TrialRecord:
    number: int
    widths: dict[str, int]
    predicted_ms: float
    feasible: bool
    proxy_accuracy: float | None


@dataclass(frozen=True)
class SearchOutcome:
    widths: dict[str, int]
    predicted_ms: float
    proxy_accuracy: float
    trials: tuple[TrialRecord, ...]
    uniform_rate: float  # the smallest uniform prune rate meeting the target (the first trial)


MIN_SHARE = 0.05  # a group's smallest share of the pruning (0 would exempt it entirely)


def on_target(space: SearchSpace, predictor: Callable[[dict[str, int]], float], target_ms: float,
              shares: dict[str, float]) -> tuple[float, dict[str, int]]:
    """(scale, widths): the least pruning along `shares` whose predicted latency meets the target.

    Group g is pruned at rate min(max_rate, max(current rate, scale·share_g)); latency falls monotonically
    with scale, so bisection finds the smallest feasible scale. Equal shares give uniform pruning, the scale
    then being the uniform rate.
    """
    def widths_at(scale: float) -> dict[str, int]:
        return space.widths_for({g: scale * s for g, s in shares.items()})

    lo, hi = 0.0, space.max_prune_rate / min(shares.values())
    if predictor(widths_at(lo)) <= target_ms:
        return lo, widths_at(lo)
    for _ in range(14):
        mid = (lo + hi) / 2
        if predictor(widths_at(mid)) <= target_ms:
            hi = mid
        else:
            lo = mid
    return hi, widths_at(hi)


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """Seeded sampler over the per-group shares (every trial already meets the latency target)."""
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=10)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=8)


@dataclass(frozen=True)
class StudyPlace:
    """Where a round's Optuna study lives. `shared`: other workers may be running trials in it, so a running
    trial is only presumed dead after `stale_s` (or 10x the slowest finished trial) without finishing; a
    local study's running trials are dead at once (leftovers of a killed run). `worker` salts the sampler
    seeds so cooperating workers propose different trials."""

    storage: optuna.storages.BaseStorage
    name: str
    label: str = "search"  # short name in messages and fault points, e.g. "round1"
    shared: bool = False
    worker: str = ""
    stale_s: float = 600.0
    poll_s: float = 0.5


def open_storage(url: str | None, journal: Path) -> tuple[optuna.storages.BaseStorage, bool]:
    """(storage, shared) for `--storage URL`: None → a journal file in the run's state folder; "journal:PATH"
    (or a path ending in .journal) → Optuna's journal file, shareable by processes on one file system;
    sqlite:///PATH, postgresql://…, mysql://… → Optuna's RDB storage (heartbeats fail dead workers' trials).
    Messages show the URL with its password masked (see `redact_url`)."""
    if url is None:
        journal.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(journal))), False
    shown = redact_url(url)
    hint = "check the URL, that the database is reachable and its driver installed"
    try:
        if url.startswith("journal:") or url.endswith(".journal"):
            path = Path(url.removeprefix("journal:"))
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path))), True
        if "://" in url:
            return _rdb_storage(url), True
    except ImportError as exc:
        raise ConfigError(f"cannot open the Optuna storage {shown!r}: its database driver is not installed "
                          f"({scrub_secrets(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, url)})",
                          hint="install it: pip install psycopg2-binary (postgresql://…) or mysqlclient (mysql://…)"
                          ) from None
    except (OSError, ValueError, optuna.exceptions.OptunaError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"cannot open the Optuna storage {shown!r}: {scrub_secrets(reason, url)}",
                          hint=hint) from None
    except Exception as exc:  # SQLAlchemy's errors (bad dialect, refused connection) have no common base here
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        raise ConfigError(f"cannot open the Optuna storage {shown!r}: {scrub_secrets(reason, url)}",
                          hint=hint) from None
    raise ConfigError(f"unsupported --storage {shown!r}",
                      hint="use journal:PATH, sqlite:///PATH, postgresql://USER@HOST/DB or mysql://USER@HOST/DB")


# scheme://user:PASSWORD@host…: the password runs to the last "@" (it may hold "/", "?" or "@" unencoded;
# masking a little too much beats showing part of it)
_NETLOC_PASSWORD = re.compile(r"^([A-Za-z][\w+.-]*://[^:/@]*:)(.*)@", re.DOTALL)
_QUERY_PASSWORD = re.compile(r"([?&](?:password|passwd|pwd)=)([^&#]*)", re.IGNORECASE)


def redact_url(url: str) -> str:
    """`url` with its password (after user: or in a password= query field) shown as ***: storage URLs end up
    in messages, logs and bug reports, which travel further than the database's credentials should."""
    return _QUERY_PASSWORD.sub(r"\1***", _NETLOC_PASSWORD.sub(r"\1***@", url, count=1))


def scrub_secrets(text: str, url: str) -> str:
    """`text` (e.g. a driver's error message) with `url` and every password it holds masked."""
    shown = redact_url(url)
    secrets = {m.group(2) for m in (_NETLOC_PASSWORD.match(url), *_QUERY_PASSWORD.finditer(url)) if m}
    with contextlib.suppress(Exception):  # and the password as the driver gets it
        from sqlalchemy.engine import make_url
        parsed = make_url(url)
        secrets |= {parsed.password or "", *(v for k, v in parsed.query.items()
                                              if k.lower() in ("password", "passwd", "pwd") and isinstance(v, str))}
    secrets |= {urllib.parse.unquote(s) for s in secrets}
    parts = text.split(url)  # the URL itself is shown redacted, the rest scrubbed of every password
    for secret in sorted((s for s in secrets if s and s != "***"), key=len, reverse=True):
        parts = [part.replace(secret, "***") for part in parts]
    return shown.join(parts)


def _rdb_storage(url: str, attempts: int = 5) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage with heartbeats. Workers started together race to create the schema of a new
    database: on a sqlite file they take turns under a lock file beside it; on a server the loser of the
    race (a unique-constraint or "already exists" error) tries again once the winner has created it."""
    url = _with_installed_driver(url)
    with _sqlite_schema_lock(url):
        for attempt in range(attempts):
            try:
                with warnings.catch_warnings():  # heartbeat_interval is flagged experimental
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    # Optuna fills {SCHEMA_VERSION}-style templates in the URL: escape braces a password holds
                    return optuna.storages.RDBStorage(url.replace("{", "{{").replace("}", "}}"),
                                                      heartbeat_interval=30, grace_period=120)
            except Exception as exc:
                lost_race = "IntegrityError" in type(exc).__name__ or "already exists" in str(exc)
                if not lost_race or attempt == attempts - 1:
                    raise
                time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _with_installed_driver(url: str) -> str:
    """A bare postgresql://… URL names psycopg2 when that is the PostgreSQL driver installed: SQLAlchemy 2.1
    takes a bare URL to mean psycopg (3), while psycopg2-binary is the driver the README and dev extra name."""
    scheme, _, rest = url.partition("://")
    if scheme == "postgresql" and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return f"postgresql+psycopg2://{rest}"
    return url


@contextlib.contextmanager
def _sqlite_schema_lock(url: str) -> Iterator[None]:
    """An exclusive lock on DB.lock for a sqlite:///DB URL (nothing for other URLs or in-memory DBs)."""
    path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else ""
    if not path or path.startswith(":memory:"):
        yield
        return
    with atomic.FileLock(paths.lock_beside(Path(path))):  # refuses a link planted under its predictable name
        yield


def _shares_of(trial: optuna.trial.FrozenTrial) -> dict[str, float]:
    """A trial's shares: the ones it was enqueued with (system attribute "fixed_params"), else its params."""
    fixed = trial.system_attrs.get("fixed_params")
    return dict(fixed) if isinstance(fixed, dict) else dict(trial.params)


def require_reachable(space: SearchSpace, predictor: Callable[[dict[str, int]], float], target_ms: float) -> None:
    """Raise SearchError (saying the smallest reachable latency and what limits it) when no network in the
    space is predicted to meet `target_ms`; checked before round 1 too, so no round is spent in vain."""
    floor_ms = predictor(space.widths_for(dict.fromkeys(space.dense_widths, space.max_prune_rate)))
    if floor_ms > target_ms:
        raise SearchError(
            f"latency target {target_ms:.4f} ms is infeasible: the smallest network the search may build "
            f"(every group pruned by {space.max_prune_rate:.0%}) is predicted at {floor_ms:.4f} ms",
            hint="raise the budget, or raise [search] max_prune_rate (limit) / lower the target's channel_multiple")


def search(space: SearchSpace, predictor: Callable[[dict[str, int]], float],
           evaluate: Callable[[dict[str, int]], float], target_ms: float, trials: int, seed: int,
           sampler: str = "tpe", progress: Progress = NullProgress(), description: str = "search",
           place: StudyPlace | None = None) -> SearchOutcome:
    """Find the per-group widths with the best proxy accuracy whose predicted latency ≤ `target_ms`.

    Trials live in the study at `place` (in memory when None): finished trials survive a killed run and are
    not run again, and several workers on one storage share the `trials` between them. The sampler is
    re-seeded per trial from the number of trials finished before it, so a resumed search proposes what
    the uninterrupted one would have.
    """
    require_reachable(space, predictor, target_ms)
    place = place or StudyPlace(optuna.storages.InMemoryStorage(), "search")
    uniform, _ = on_target(space, predictor, target_ms, dict.fromkeys(space.dense_widths, 1.0))
    study = _Study(place, make_sampler(sampler, seed), trials, list(space.dense_widths))
    scores: dict[tuple[int, ...], float] = {}  # widths already scored (two share vectors may round alike)

    def objective(trial: optuna.Trial) -> float:
        study.refuse_surplus(trial)
        shares = {g: trial.suggest_float(g, MIN_SHARE, 1.0) for g in space.dense_widths}
        _, widths = on_target(space, predictor, target_ms, shares)
        trial.set_user_attr("widths", widths)
        trial.set_user_attr("predicted_ms", predictor(widths))
        trial.set_user_attr("worker", place.worker)
        key = tuple(widths.values())
        if key not in scores:
            known = study.score_of(key)
            scores[key] = known if known is not None else evaluate(widths)
        faults.reached(f"trial:{place.label}:{trial.number}")
        return scores[key]

    with stage(progress, description, trials) as bar:
        if study.finished():
            bar.advance(len(study.finished()), "resumed")
        study.fail_stale()
        while (done := len(study.finished())) < trials:
            if done + len(study.running()) >= trials:  # other workers are finishing the last trials
                time.sleep(place.poll_s)
                study.fail_stale()
                continue
            study.enqueue_uniform()  # in the loop: a uniform trial found dead mid-search is run again
            study.study.sampler = make_sampler(sampler, derive_seed(seed, f"trial{done}:"
                                                                          f"{place.worker if place.shared else ''}"))
            study.study.optimize(objective, n_trials=1, catch=())
            best = max((t.value for t in study.finished()), default=None)
            bar.advance(len(study.finished()) - done, f"best proxy acc {best:.3f}" if best is not None else "")
    records = [TrialRecord(t.number, dict(t.user_attrs["widths"]), float(t.user_attrs["predicted_ms"]),
                           float(t.user_attrs["predicted_ms"]) <= target_ms, float(t.value))
               for t in study.finished()]
    feasible = [r for r in records if r.feasible]
    if not feasible:  # unreachable: every trial is placed on the target, whose floor was checked above
        raise SearchError(f"no trial met the latency target {target_ms:.4f} ms", hint="raise [search] trials")
    best = max(feasible, key=lambda r: (r.proxy_accuracy, r.predicted_ms, -r.number))  # ties: the larger network
    return SearchOutcome(best.widths, best.predicted_ms, float(best.proxy_accuracy), tuple(records), uniform)


class _Study:
    """One round's Optuna study as the search sees it: the first `trials` finished trials, the uniform trial
    enqueued once, surplus trials of cooperating workers given up, dead workers' trials failed."""

    def __init__(self, place: StudyPlace, sampler: optuna.samplers.BaseSampler, trials: int,
                 groups: list[str]) -> None:
        self.place, self.trials = place, trials
        self.study = optuna.create_study(storage=place.storage, study_name=place.name, direction="maximize",
                                         load_if_exists=True, sampler=sampler)
        self.study_id = place.storage.get_study_id_from_name(place.name)
        self.uniform_shares = dict.fromkeys(groups, 1.0)

    def finished(self) -> list[optuna.trial.FrozenTrial]:
        done = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return sorted(done, key=lambda t: t.number)[:self.trials]

    def running(self) -> list[optuna.trial.FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))

    def score_of(self, widths_key: tuple[int, ...]) -> float | None:
        """The score a finished trial (this worker's or another's) already gave these widths."""
        known = [t.value for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                 if tuple(t.user_attrs.get("widths", {}).values()) == widths_key]
        return known[0] if known else None

    def uniform_trials(self) -> list[optuna.trial.FrozenTrial]:
        """Live trials of the uniform shares, by number. An enqueued trial (WAITING, or RUNNING before it
        suggested anything) has no params yet: its shares are the "fixed_params" it was enqueued with."""
        live = self.study.get_trials(deepcopy=False,
                                     states=(TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING))
        return sorted((t for t in live if _shares_of(t) == self.uniform_shares), key=lambda t: t.number)

    def enqueue_uniform(self) -> None:
        """The uniform rate first; again if its trial was killed (FAIL), never while one is live. Optuna's
        enqueue_trial(skip_if_exists=True) would not do: it also counts failed trials."""
        if not self.uniform_trials():
            self.study.enqueue_trial(self.uniform_shares)

    def refuse_surplus(self, trial: optuna.Trial) -> None:
        """Give up a trial beyond the first `trials` (another worker took the last one), or a second copy of
        the uniform trial (workers that started together both enqueued it: the first one runs)."""
        live = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
        if sum(t.number < trial.number for t in live) >= self.trials:
            raise optuna.TrialPruned("surplus: another worker took the last trial")
        storage = self.place.storage
        this = storage.get_trial(storage.get_trial_id_from_study_id_trial_number(self.study_id, trial.number))
        if _shares_of(this) == self.uniform_shares and self.uniform_trials()[0].number < trial.number:
            raise optuna.TrialPruned("surplus: another worker runs the uniform trial")

    def fail_stale(self) -> None:
        """Fail running trials whose worker stopped: in a local study every one (leftovers of a killed run); in
        a shared one those running longer than `stale_s` or 10x the slowest finished trial."""
        now = datetime.datetime.now()
        longest = max((t.duration.total_seconds() for t in self.finished() if t.duration), default=0.0)
        patience = max(self.place.stale_s, 10 * longest)  # a slow trial is not a dead worker
        for t in self.running():
            if not self.place.shared or (t.datetime_start and (now - t.datetime_start).total_seconds() > patience):
                log.warning("trial %d of the %s search never finished (its worker stopped); running it again",
                            t.number, self.place.label)
                trial_id = self.place.storage.get_trial_id_from_study_id_trial_number(self.study_id, t.number)
                self.place.storage.set_trial_state_values(trial_id, TrialState.FAIL)
