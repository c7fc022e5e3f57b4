"""A real PostgreSQL server for `--storage postgresql://…`, started by the tests themselves (Debian's
`postgresql` package, which scripts/setup.sh installs): password authentication, and the password in no
message. The two-worker shared search on it is in test_storage.py (the `postgres_url` fixture)."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INSTALL_HINT = "PostgreSQL is missing: apt-get install -y postgresql (scripts/setup.sh installs it; the CI runs it)"
USER = "hwprune"
PASSWORD = f"pw-{secrets.token_hex(8)}"  # unique to this test session: any hit in an output file is a leak


def postgres_bindir() -> Path:
    """The folder of initdb and pg_ctl: Debian keeps them in /usr/lib/postgresql/VERSION/bin (newest wins),
    off PATH; pg_config, where installed, names the folder of other builds."""
    def version(initdb: Path) -> tuple[int, ...]:
        return tuple(int(p) for p in initdb.parents[1].name.split(".") if p.isdigit())

    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=version)
    if found:
        return found[-1].parent
    if shutil.which("pg_config"):
        bindir = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True).stdout.strip()
        if bindir and (Path(bindir) / "initdb").exists():
            return Path(bindir)
    if (initdb := shutil.which("initdb")) and (Path(initdb).resolve().parent / "pg_ctl").exists():
        return Path(initdb).resolve().parent
    pytest.fail(INSTALL_HINT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """A throw-away cluster in a temporary folder: TCP on a free loopback port plus a Unix socket in the
    folder, scram-sha-256 password authentication for USER, fsync off (nothing in it needs to survive).
    PostgreSQL refuses to run as root, so as root the server runs as the `postgres` system user."""

    def __init__(self) -> None:
        self.bindir = postgres_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="hwprune-pg-"))  # short: a socket path is at most 107 bytes
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                pytest.fail(f"running as root and there is no `postgres` user to run the server as. {INSTALL_HINT}")
            os.chown(self.root, account.pw_uid, account.pw_gid)
            self.as_user = (["runuser", "-u", "postgres", "--"] if shutil.which("runuser") else
                            ["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--init-groups"])
        self.root.chmod(0o700)
        self.url = f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/hwprune"

    def _run(self, tool: str, *args: str) -> None:
        result = subprocess.run([*self.as_user, str(self.bindir / tool), *args], cwd=self.root,
                                capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            pytest.fail(f"{tool} failed ({result.returncode}): {result.stdout[-1000:]}{result.stderr[-2000:]}\n{log}")

    def start(self) -> None:
        pwfile = self.root / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        if self.as_user:
            shutil.chown(pwfile, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", USER, f"--pwfile={pwfile}", "--auth-local=scram-sha-256",
                  "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync")
        pwfile.unlink()
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", options, "start")
        import psycopg2
        for attempt in range(50):  # pg_ctl -w has waited for the socket; TCP follows at once, but be patient
            try:
                connection = psycopg2.connect(host="127.0.0.1", port=self.port, user=USER, password=PASSWORD,
                                              dbname="postgres", connect_timeout=5)
                break
            except psycopg2.OperationalError:
                if attempt == 49:
                    raise
                time.sleep(0.1)
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("CREATE DATABASE hwprune")
        connection.close()

    def stop(self) -> None:
        """Stop the server at once (its data is thrown away) and remove the folder; never raises."""
        if (self.data / "postmaster.pid").exists():
            subprocess.run([*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                            "-w", "-t", "30", "stop"], cwd=self.root, capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """postgresql://hwprune:PASSWORD@127.0.0.1:PORT/hwprune on a server started for this module and stopped
    after it, whether its tests pass or fail (a failed start is cleaned up too)."""
    server = PostgresServer()
    try:
        server.start()
        yield server.url
    finally:
        server.stop()


def test_the_server_refuses_a_wrong_password_and_takes_the_right_one(postgres_url):
    import psycopg2
    from sqlalchemy.engine import make_url
    url = make_url(postgres_url)
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(host=url.host, port=url.port, user=url.username, password="wrong", dbname=url.database)
    psycopg2.connect(host=url.host, port=url.port, user=url.username, password=url.password,
                     dbname=url.database).close()


def test_a_refused_login_is_a_one_line_error_that_never_shows_the_password(tmp_path, postgres_url):
    url = postgres_url.replace(f":{PASSWORD}@", ":wrong-s3cret@")
    result = subprocess.run([sys.executable, "-m", "hwprune", "--target", "jetson-nano", "--storage", url,
                             "--out", str(tmp_path / "o"), "--limit", "64", "--quiet"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr
    first, *rest = result.stderr.strip().splitlines()
    assert first.startswith(f"error: cannot open the Optuna storage 'postgresql://{USER}:***@127.0.0.1:")
    assert "password authentication failed" in first
    assert len(rest) == 1 and rest[0].startswith("hint: ")
    assert "s3cret" not in result.stdout + result.stderr and PASSWORD not in result.stdout + result.stderr


def test_open_storage_works_on_a_bare_postgresql_url(postgres_url, tmp_path):
    """SQLAlchemy 2.1 reads a bare postgresql:// as psycopg (3); the dev extra installs psycopg2."""
    import optuna

    from hwprune.search import open_storage
    storage, shared = open_storage(postgres_url, tmp_path / "unused.journal")
    assert shared and isinstance(storage, optuna.storages.RDBStorage)
    optuna.create_study(storage=storage, study_name="s").optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert len(optuna.load_study(study_name="s", storage=storage).trials) == 2
