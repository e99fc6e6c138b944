"""What a newcomer's first commands do (issue 27): --version, API keys listed and revoked (and a
revoked key refused by a running door), probe's port, page breaks people can see, quiet exports."""

from __future__ import annotations

import logging
from importlib.metadata import version
from types import SimpleNamespace

import httpx
import pytest
from click.testing import CliRunner

from ocrstream.cli.app import CHATTY_LOGGERS
from ocrstream.cli.main import main
from ocrstream.settings import Settings
from ocrstream.streaming.auth import Authenticator, create_key
from services.ingest.http import create_app


def test_submit_starts_without_the_other_commands_code_and_every_command_is_listed():
    import subprocess
    import sys

    from ocrstream.cli.app import COMMAND_MODULES

    probe = ("import sys; from ocrstream.cli.main import main; from click.testing import CliRunner; "
             "r = CliRunner().invoke(main, ['submit', '--help']); assert r.exit_code == 0, r.output; "
             "print(sorted(n for n in sys.modules if n.startswith('ocrstream.cli.')))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert "ocrstream.cli.submit" in loaded
    assert not any(f"ocrstream.cli.{m}'" in loaded for m in ("documents", "processes", "model", "dev", "dlq"))
    listed = CliRunner().invoke(main, ["--help"]).output
    for module in set(COMMAND_MODULES.values()):  # every command module's commands, and no others
        __import__(f"ocrstream.cli.{module}")
    assert set(main.commands) == set(COMMAND_MODULES)
    assert all(f"  {name} " in listed for name in COMMAND_MODULES)


def test_version():
    out = CliRunner().invoke(main, ["--version"])
    assert out.exit_code == 0 and out.output.strip() == f"ocrstream, version {version('ocrstream')}"


def test_apikey_list_shows_no_secret_and_revoke_removes_by_name(tmp_path):
    keys = tmp_path / "keys.jsonl"
    runner = CliRunner()
    tokens = [runner.invoke(main, ["apikey", "create", name, "--file", str(keys)]).stdout.strip()
              for name in ("alice", "bob")]
    listed = runner.invoke(main, ["apikey", "list", "--file", str(keys)])
    assert listed.exit_code == 0
    assert [line.split()[0] for line in listed.stdout.splitlines()] == ["alice", "bob"]
    assert not any(t in listed.output for t in tokens) and "sha256" not in listed.output
    revoked = runner.invoke(main, ["apikey", "revoke", "alice", "--file", str(keys)])
    assert revoked.exit_code == 0 and "revoked 1" in revoked.output
    assert [line.split()[0] for line in runner.invoke(main, ["apikey", "list", "--file", str(keys)]).stdout
            .splitlines()] == ["bob"]
    assert (keys.stat().st_mode & 0o777) == 0o600
    again = runner.invoke(main, ["apikey", "revoke", "alice", "--file", str(keys)])
    assert again.exit_code == 1 and "no key called 'alice'" in again.output


class _Accepting:
    def __init__(self, settings):
        self.settings = settings

    async def submit(self, data, filename, door, template, **_):
        return SimpleNamespace(error=None, document_id="doc-1", object_key="originals/x", reused=False)


async def test_a_revoked_key_is_refused_by_the_running_door(tmp_path):
    keys = tmp_path / "keys.jsonl"
    token = create_key(keys, "carol", ("ingest",))
    settings = Settings(_env_file=None, api_keys_file=str(keys))
    app = create_app(_Accepting(settings), Authenticator(settings, "127.0.0.1"))
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://door") as client:
        first = await client.post("/v1/documents", files={"file": ("r.png", b"\x89PNG\r\n\x1a\n" + b"0" * 64)},
                                  headers=headers)
        assert first.status_code == 202, first.text
        CliRunner().invoke(main, ["apikey", "revoke", "carol", "--file", str(keys)])
        second = await client.post("/v1/documents", files={"file": ("r.png", b"\x89PNG\r\n\x1a\n" + b"0" * 64)},
                                   headers=headers)
        assert second.status_code == 401


@pytest.mark.parametrize(("args", "port"), [(["--stage", "recognize"], 9103), (["--stage", "api"], 9105),
                                             (["--port", "9"], 9)])
def test_probe_asks_the_stages_own_port(args, port, monkeypatch):
    monkeypatch.delenv("OCRSTREAM_METRICS_PORT", raising=False)
    out = CliRunner().invoke(main, ["probe", "/readyz", *args, "--timeout", "0.5"])
    assert out.exit_code == 1 and f"/readyz on :{port}:" in out.output  # nothing listens there in a unit test


def test_probe_without_a_port_says_how_to_name_one(monkeypatch, tmp_path):
    monkeypatch.delenv("OCRSTREAM_METRICS_PORT", raising=False)
    monkeypatch.setenv("OCRSTREAM_ENV_FILE", str(tmp_path / "none.env"))
    from ocrstream.settings import get_settings

    get_settings.cache_clear()
    try:
        out = CliRunner().invoke(main, ["probe"])
    finally:
        get_settings.cache_clear()
    assert out.exit_code == 2 and "--stage" in out.output


def test_chatty_libraries_are_quiet_unless_verbose():
    CliRunner().invoke(main, ["settings"])
    assert all(logging.getLogger(name).level == logging.WARNING for name in CHATTY_LOGGERS)
    CliRunner().invoke(main, ["-v", "settings"])
    assert logging.getLogger("fontTools").level == logging.NOTSET  # not raised: -v shows them


def test_the_settings_file_is_found_from_any_directory(tmp_path):
    """OCRSTREAM_ENV_FILE, else .ocrstream/dev/stack.env here, else the file `dev up` recorded
    under $XDG_STATE_HOME (ocrstream/environment.py env_file_path)."""
    from ocrstream.environment import env_file_path, env_pointer_file

    project, elsewhere, xdg = tmp_path / "project", tmp_path / "elsewhere", tmp_path / "xdg"
    stack_env = project / ".ocrstream" / "dev" / "stack.env"
    stack_env.parent.mkdir(parents=True)
    stack_env.write_text("OCRSTREAM_KAFKA_BOOTSTRAP=127.0.0.1:1234\n")
    elsewhere.mkdir()
    environ = {"XDG_STATE_HOME": str(xdg)}
    assert env_file_path(environ, project) == project / ".ocrstream" / "dev" / "stack.env"
    assert env_file_path(environ, elsewhere) is None  # nothing recorded yet
    pointer = env_pointer_file(environ)
    assert pointer == xdg / "ocrstream" / "env-file"
    pointer.parent.mkdir(parents=True)
    pointer.write_text(f"{stack_env}\n")
    assert env_file_path(environ, elsewhere) == stack_env
    other = tmp_path / "other.env"
    other.write_text("")
    assert env_file_path({**environ, "OCRSTREAM_ENV_FILE": str(other)}, elsewhere) == other
    assert env_file_path({**environ, "OCRSTREAM_ENV_FILE": str(tmp_path / "none.env")}, elsewhere) is None
    stack_env.unlink()  # the recorded stack's file is gone (dev down --purge)
    assert env_file_path(environ, elsewhere) is None
    assert env_pointer_file({"HOME": str(tmp_path)}) == tmp_path / ".local" / "state" / "ocrstream" / "env-file"


def test_settings_get_prints_one_value(monkeypatch):
    from ocrstream.settings import get_settings

    monkeypatch.setenv("OCRSTREAM_KAFKA_BOOTSTRAP", "127.0.0.1:4242")
    monkeypatch.setenv("OCRSTREAM_S3_SECRET_KEY", "very-secret")
    monkeypatch.setenv("OCRSTREAM_ENV_FILE", "/nonexistent")
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        for name in ("kafka_bootstrap", "OCRSTREAM_KAFKA_BOOTSTRAP"):
            out = runner.invoke(main, ["settings", "--get", name])
            assert (out.exit_code, out.output) == (0, "127.0.0.1:4242\n")
        secret = runner.invoke(main, ["settings", "--get", "s3_secret_key"])
        assert "very-secret" not in secret.output and "*" in secret.output  # masked, as in the list
        assert runner.invoke(main, ["settings", "--get", "nope"]).exit_code == 2
    finally:
        get_settings.cache_clear()


def test_a_refusing_door_names_the_variable_to_set():
    from ocrstream.cli.submit import refusal_hint

    unset = refusal_hint(401, "http://127.0.0.1:8080", has_key=False)
    assert "OCRSTREAM_API_KEY is not set" in unset and "--via kafka" in unset
    assert "is not one of its keys" in refusal_hint(401, "http://d", has_key=True)
    assert "lacks the ingest scope" in refusal_hint(403, "http://d", has_key=True)
    assert refusal_hint(500, "http://d", has_key=True) is None
