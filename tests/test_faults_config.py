"""A database URL no engine can be made of, and a database that cannot be
reached: one configuration error line (exit 2), never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from stripeline.cli import main
from stripeline.errors import ConfigError
from stripeline.settings import load_settings

BAD_URLS = [
    "postgresql://stripeline:hunter2@127.0.0.1:notaport/db",
    "postgresql://stripeline:hunter2@127.0.0.1:99999/db",
    "postgres://stripeline:hunter2@[::1/db",
]


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize("url", BAD_URLS)
def test_settings_refuse_an_unparsable_database_url(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(database_url=url)
    assert "STRIPELINE_DATABASE_URL" in caught.value.message
    assert "hunter2" not in caught.value.message


@pytest.mark.parametrize("url", BAD_URLS)
@pytest.mark.parametrize(
    "command",
    [("serve",), ("worker",), ("migrate",), ("events", "list"), ("mirror", "list", "customer")],
)
def test_every_command_reports_a_bad_url_as_a_configuration_error(
    url: str, command: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRIPELINE_DATABASE_URL", url)
    result = run(*command)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stderr.startswith("stripeline: configuration error: STRIPELINE_DATABASE_URL")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output and "hunter2" not in result.output


@pytest.mark.parametrize("url", BAD_URLS)
def test_doctor_prints_every_check_with_the_database_failing(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRIPELINE_DATABASE_URL", url)
    result = run("doctor")
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    found = {
        line.split(None, 1)[1].split("  ")[0]: line
        for line in result.stdout.splitlines()
        if line.startswith(("pass", "FAIL"))
    }
    assert set(found) >= {"secret key", "mode", "settings", "database", "migrations"}
    assert found["database"].startswith("FAIL") and "STRIPELINE_DATABASE_URL" in found["database"]
    assert found["secret key"].startswith("pass")
    assert "hunter2" not in result.output


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://stripeline:hunter2@127.0.0.1:1/nowhere",
        "sqlite:////nonexistent-directory/for/stripeline.db",
    ],
)
def test_migrate_against_an_unreachable_database_says_so_in_one_line(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRIPELINE_DATABASE_URL", url)
    result = run("migrate")
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("stripeline: migration failed: OperationalError")
    assert "Traceback" not in result.output and "hunter2" not in result.output


@pytest.mark.parametrize("attribute", ["app", "make_app"])
def test_an_application_reading_a_bad_url_is_a_configuration_error(
    attribute: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--app`` whose module (or factory) reads the settings itself."""
    module = f"faulty_app_{attribute}"
    (tmp_path / f"{module}.py").write_text(
        "import stripeline\n"
        "from stripeline.settings import load_settings\n"
        "def make_app():\n"
        "    return stripeline.Stripeline(load_settings())\n"
        + ("app = make_app()\n" if attribute == "app" else "")
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("STRIPELINE_DATABASE_URL", BAD_URLS[0])
    result = run("worker", "--app", f"{module}:{attribute}")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("stripeline: configuration error: STRIPELINE_DATABASE_URL")
    assert "Traceback" not in result.output and "hunter2" not in result.output
