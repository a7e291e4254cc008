"""A throwaway PostgreSQL server for the test suite (Debian's `postgresql` package).

`python -m tests.support.pg_cluster run -- <command...>` starts a fresh cluster in a temporary
folder on a free localhost port, runs the command with TEST_DATABASE_URL pointing at it, stops
the cluster and returns the command's exit code. When TEST_DATABASE_URL is already set (a server
you run yourself) it only runs the command.

The cluster trades durability for speed (fsync off): it lives for one test run only. initdb
refuses to run as root, so under root the server runs as the `postgres` system user.
"""

from __future__ import annotations

import argparse
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Settings for a disposable server: no durability, enough connections for process tests.
FAST_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "listen_addresses": "127.0.0.1",
}


def find_bindir() -> Path:
    """The newest installed PostgreSQL server binaries (initdb, pg_ctl)."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name),
    )
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise SystemExit(
        "PostgreSQL server binaries not found: install them with `apt-get install postgresql` "
        "or set TEST_DATABASE_URL to a server you run."
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise SystemExit("as root, the server runs as the `postgres` user: none exists") from None
    return ["runuser", "-u", "postgres", "--", *cmd]


def _chown_to_server_user(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(path, entry.pw_uid, entry.pw_gid)


@contextmanager
def cluster() -> Iterator[str]:
    """Start a fresh cluster; yields its SQLAlchemy URL (database `postgres`, trust auth)."""
    bindir = find_bindir()
    root = Path(tempfile.mkdtemp(prefix="billing-pg-"))
    root.chmod(0o755)
    _chown_to_server_user(root)
    data = root / "data"
    port = free_port()
    log = root / "server.log"
    try:
        subprocess.run(
            _as_server_user(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                    "-N",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        options = " ".join(f"-c {k}={v}" for k, v in FAST_SETTINGS.items())
        options += f" -p {port} -c unix_socket_directories={root}"
        subprocess.run(
            _as_server_user(
                [
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-l",
                    str(log),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run(
                _as_server_user(
                    [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
                ),
                check=False,
                stdout=subprocess.DEVNULL,
            )
    except subprocess.CalledProcessError:
        if log.exists():
            sys.stderr.write(log.read_text(errors="replace")[-4000:])
        raise
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["run"])
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    if os.environ.get("TEST_DATABASE_URL"):
        return subprocess.run(command, check=False).returncode
    started = time.perf_counter()
    with cluster() as url:
        print(
            f"PostgreSQL test server at {url} (started in {time.perf_counter() - started:.1f} s)",
            flush=True,
        )
        env = {**os.environ, "TEST_DATABASE_URL": url}
        return subprocess.run(command, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
