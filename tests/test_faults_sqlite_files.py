"""Issue 8, bug 8: a write-protected SQLite ``-shm`` file killed the process
(SIGBUS, no log line). Every command now refuses at start with one
configuration line naming the file and the fix, and exit 2.

Permissions do not stop root: run as root, the commands (and the check) run as
the ``nobody`` user through ``setpriv``, so the files are really unwritable to
them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from stripeline.db import make_engine, migrate
from stripeline.settings import sqlite_files_problem

NOBODY = 65534
IS_ROOT = os.geteuid() == 0
SETPRIV = shutil.which("setpriv")


def _as_unprivileged(argv: list[str]) -> list[str]:
    """``argv`` run as a user whom file permissions bind."""
    if not IS_ROOT:
        return argv
    if SETPRIV is None:  # pragma: no cover - every CI image has util-linux
        pytest.skip("running as root without setpriv: file permissions cannot be tested")
    return [SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv]


@pytest.fixture
def database_dir() -> Iterator[Path]:
    """A migrated SQLite database in a directory the unprivileged user owns."""
    directory = Path(tempfile.mkdtemp(prefix="stripeline-files-"))
    directory.chmod(0o755)
    engine = make_engine(f"sqlite:///{directory / 'stripeline.db'}")
    migrate(engine)
    engine.dispose()
    (directory / "stripeline.db-shm").write_bytes(b"")
    if IS_ROOT:
        for path in (directory, *directory.iterdir()):
            os.chown(path, NOBODY, NOBODY)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _run(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(directory),
        "STRIPELINE_DATABASE_URL": f"sqlite:///{directory / 'stripeline.db'}",
    }
    return subprocess.run(
        _as_unprivileged([sys.executable, *args]),
        env=env,
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _check(directory: Path) -> str:
    """``sqlite_files_problem`` as the unprivileged user sees the files."""
    result = _run(
        directory,
        "-c",
        "import sys; from stripeline.settings import sqlite_files_problem; "
        "print(sqlite_files_problem(sys.argv[1]))",
        f"sqlite:///{directory / 'stripeline.db'}",
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize("command", [["migrate"], ["worker"], ["events", "list"]])
def test_a_read_only_shm_file_is_a_configuration_error(
    database_dir: Path, command: list[str]
) -> None:
    shm = database_dir / "stripeline.db-shm"
    shm.chmod(0o444)
    result = _run(database_dir, "-m", "stripeline", *command)
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("stripeline: configuration error: the SQLite file ")
    assert str(shm) in lines[0]
    assert "read and write access" in lines[0]
    assert "Traceback" not in result.stderr


def test_doctor_names_the_read_only_shm_file(database_dir: Path) -> None:
    shm = database_dir / "stripeline.db-shm"
    shm.chmod(0o444)
    result = _run(database_dir, "-m", "stripeline", "doctor")
    assert result.returncode != 0
    assert f"the SQLite file {shm} is not readable and writable" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_writable_files_pass_and_migrate_runs(database_dir: Path) -> None:
    assert _check(database_dir) == "None"
    result = _run(database_dir, "-m", "stripeline", "migrate")
    assert result.returncode == 0, result.stderr
    assert "newest migration" in result.stdout


@pytest.mark.parametrize("name", ["stripeline.db", "stripeline.db-wal", "stripeline.db-shm"])
def test_each_unwritable_file_is_named(database_dir: Path, name: str) -> None:
    path = database_dir / name
    if not path.exists():
        path.write_bytes(b"")
        if IS_ROOT:
            os.chown(path, NOBODY, NOBODY)
    path.chmod(0o444)
    problem = _check(database_dir)
    assert problem.startswith(f"the SQLite file {path} is not readable and writable")


def test_an_unwritable_directory_is_named(database_dir: Path) -> None:
    database_dir.chmod(0o555)
    try:
        problem = _check(database_dir)
    finally:
        database_dir.chmod(0o755)
    assert problem.startswith(f"the SQLite database's directory {database_dir} is not writable")


def test_what_is_not_a_sqlite_file_is_not_checked(tmp_path: Path) -> None:
    assert sqlite_files_problem("postgresql://u@h/db") is None
    assert sqlite_files_problem("sqlite://") is None
    assert sqlite_files_problem("sqlite:///:memory:") is None
    assert sqlite_files_problem("sqlite:///file:x?mode=memory&uri=true") is None
    # Not there yet: SQLite creates the file (a missing directory is its error).
    assert sqlite_files_problem(f"sqlite:///{tmp_path / 'new.db'}") is None
    assert sqlite_files_problem(f"sqlite:///{tmp_path / 'missing' / 'new.db'}") is None
