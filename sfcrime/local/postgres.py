"""`python -m sfcrime postgres`: a local PostgreSQL for trying the PostgreSQL results store, in the foreground.

Debian's server binaries (`make setup-postgres` installs them when missing), a data folder that survives
restarts (initdb on first use), TCP on 127.0.0.1 only and no Unix socket. The user `sfcrime` needs no
password from this machine; any other role logs in with its password (scram-sha-256). PostgreSQL refuses
to run as root: started as root, the server runs as Debian's `postgres` user, which owns the data folder.
Ctrl-C or SIGTERM stops it with a fast shutdown (every committed transaction kept).
"""

from __future__ import annotations

import logging
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ..config import REPO_DIR
from ..errors import UserError

log = logging.getLogger(__name__)
DEFAULT_DATA_DIR = REPO_DIR / "postgres-data"
DEFAULT_PORT = 5432
USER = "sfcrime"
DATABASE = "sfcrime"
SERVER_USER = "postgres"  # Debian's package makes it; the server runs as it when we are root
READY_TIMEOUT_S = 60.0
HBA = f"""# sfcrime's local server: TCP on 127.0.0.1 only
host all {USER} 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
"""


def server_binaries() -> Path:
    """The newest installed server's bin folder (/usr/lib/postgresql/<version>/bin)."""
    found = sorted((p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "postgres").exists()),
                   key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    if not found:
        raise UserError("PostgreSQL's server is not installed: run `make setup-postgres` (Debian's postgresql)")
    return found[-1]


def _as_server_user():
    """preexec_fn: drop root for the server's own user, as PostgreSQL demands."""
    if os.getuid() != 0:
        return None
    try:
        account = pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise UserError(f"running as root, PostgreSQL needs an unprivileged user: there is no {SERVER_USER!r} "
                        "(Debian's postgresql package makes it: make setup-postgres)") from None

    def drop() -> None:
        os.setgid(account.pw_gid)
        os.initgroups(SERVER_USER, account.pw_gid)
        os.setuid(account.pw_uid)
        os.environ["HOME"] = account.pw_dir

    return drop, account


def _hand_over(path: Path, account) -> None:
    """The data folder (and the folders above it) usable by the server's user."""
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
            os.chown(name, account.pw_uid, account.pw_gid)
    for parent in path.parents:
        if parent == Path("/"):
            break
        mode = parent.stat().st_mode
        if not mode & 0o001:  # pytest's tmp folders are 0700: the server must reach its data through them
            os.chmod(parent, mode | 0o001)


def prepare(data_dir: Path, binaries: Path, as_user) -> None:
    """initdb on first use; refuses a folder that holds something else."""
    if (data_dir / "PG_VERSION").exists():
        if as_user:
            _hand_over(data_dir, as_user[1])
        return
    if data_dir.exists() and any(data_dir.iterdir()):
        raise UserError(f"--data-dir {data_dir} is not empty and holds no PostgreSQL data: use another folder")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot make --data-dir {data_dir}: {error.strerror or error}") from None
    if as_user:
        _hand_over(data_dir, as_user[1])
    done = subprocess.run([str(binaries / "initdb"), "-D", str(data_dir), "-U", USER, "-E", "UTF8",
                           "--locale=C.UTF-8", "--auth-local=reject", "--auth-host=scram-sha-256"],
                          capture_output=True, text=True, preexec_fn=as_user[0] if as_user else None)
    if done.returncode:
        reason = (done.stderr.strip().splitlines() or ["initdb failed"])[-1]
        raise UserError(f"cannot make a PostgreSQL data folder in {data_dir}: {reason}")
    (data_dir / "pg_hba.conf").write_text(HBA)
    if as_user:
        _hand_over(data_dir, as_user[1])


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def start(data_dir: Path, port: int, log_file: Path) -> tuple[subprocess.Popen, str]:
    """The server, started and answering with its database made: (its process, the URL to pass)."""
    import psycopg

    binaries = server_binaries()
    as_user = _as_server_user()
    prepare(data_dir, binaries, as_user)
    if not port_free(port):
        raise UserError(f"port {port} on 127.0.0.1 is in use (another PostgreSQL?): pass another --port")
    with open(log_file, "a") as server_log:
        process = subprocess.Popen(
            [str(binaries / "postgres"), "-D", str(data_dir), "-p", str(port), "-c", "listen_addresses=127.0.0.1",
             "-c", "unix_socket_directories=", "-c", "logging_collector=off"],
            stdin=subprocess.DEVNULL, stdout=server_log, stderr=server_log,
            preexec_fn=as_user[0] if as_user else None)
    url = f"postgresql://{USER}@127.0.0.1:{port}/{DATABASE}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise UserError(f"PostgreSQL stopped at start (exit code {process.returncode}): {last_line(log_file)}")
        try:
            with psycopg.connect(f"postgresql://{USER}@127.0.0.1:{port}/postgres", autocommit=True,
                                 connect_timeout=2) as admin:
                if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone() is None:
                    admin.execute(f"CREATE DATABASE {DATABASE}")
            return process, url
        except psycopg.OperationalError as error:
            if time.monotonic() > deadline:
                stop(process)
                raise UserError(f"PostgreSQL did not answer within {READY_TIMEOUT_S:.0f} s: {error}; see {log_file}") \
                    from None
            time.sleep(0.2)


def stop(process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """A fast shutdown (SIGINT): open transactions are rolled back, every committed one is kept."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def last_line(log_file: Path) -> str:
    try:
        lines = [line for line in log_file.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1][:300] if lines else "no log"


def run_foreground(port: int, data_dir: str | Path) -> int:
    """Until Ctrl-C or SIGTERM; returns 0 once the server has stopped cleanly."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # raises KeyboardInterrupt, as Ctrl-C does
    data_dir = Path(data_dir).resolve()
    log_file = data_dir.parent / f"{data_dir.name}.log"
    binaries = server_binaries()
    version = binaries.parent.name
    process = None
    try:
        process, url = start(data_dir, port, log_file)
        print(f"PostgreSQL {version} ready on 127.0.0.1:{port}, data in {data_dir}, log {log_file}: "
              f"pass --results {url}  (Ctrl-C stops it)", flush=True)
        while process.poll() is None:
            time.sleep(0.5)
        raise UserError(f"PostgreSQL exited (code {process.returncode}): {last_line(log_file)}")
    except KeyboardInterrupt:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second press must not cut the shutdown short
            signal.signal(sig, signal.SIG_IGN)
        print("stopping PostgreSQL", file=sys.stderr, flush=True)
        return 0
    finally:
        if process is not None:
            stop(process)
