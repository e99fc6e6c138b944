"""The settings a client of the HTTP door reads without pydantic agree with ``Settings``."""

import subprocess
import sys

import pytest

from ocrstream.client.http_submit import DoorSettings, HttpDoor
from ocrstream.environment import env_file_path, ocrstream_variables
from ocrstream.errors import ConfigurationError
from ocrstream.settings import Settings, get_settings

pytestmark = pytest.mark.unit

DOOR_VARIABLES = ("INGEST_URL", "HTTP_HOST", "HTTP_PORT", "API_KEY", "MAX_DOCUMENT_BYTES", "S3_BUCKET")


@pytest.fixture
def environ(monkeypatch, tmp_path):
    """This process's environment without the door's variables, and no dotenv file found; set
    ``OCRSTREAM_*`` with ``monkeypatch.setenv``, write ``tmp_path / "stack.env"`` for a file."""
    for name in DOOR_VARIABLES:
        monkeypatch.delenv(f"OCRSTREAM_{name}", raising=False)
    monkeypatch.setenv("OCRSTREAM_ENV_FILE", str(tmp_path / "stack.env"))
    get_settings.cache_clear()
    yield tmp_path / "stack.env"
    get_settings.cache_clear()


def both() -> tuple[DoorSettings | None, DoorSettings]:
    """The door's settings read without pydantic and out of ``Settings``, the same way a process does."""
    return DoorSettings.from_environment(), DoorSettings.of(Settings(_env_file=env_file_path()))


def test_the_defaults_are_the_settings_defaults(environ, monkeypatch):
    light, full = both()
    assert light == full == DoorSettings()
    assert (full.http_host, full.http_port, full.s3_bucket) == ("127.0.0.1", 8080, "ocrstream")


def test_the_environment_wins_over_the_dotenv_file_as_in_settings(environ, monkeypatch):
    environ.write_text('OCRSTREAM_HTTP_PORT=9001\nOCRSTREAM_S3_BUCKET="receipts"\nocrstream_http_host=0.0.0.0\n'
                       "OCRSTREAM_API_KEY='k-123'\nOCRSTREAM_MAX_DOCUMENT_BYTES=5000\nOTHER=1\n")
    monkeypatch.setenv("OCRSTREAM_HTTP_PORT", "9002")
    monkeypatch.setenv("OCRSTREAM_MAX_DOCUMENT_BYTES", "1000")
    light, full = both()
    assert light == full
    assert (light.http_port, light.max_document_bytes, light.s3_bucket, light.http_host, light.api_key) == (
        9002, 1000, "receipts", "0.0.0.0", "k-123")
    assert HttpDoor(light).url == HttpDoor(get_settings()).url == "http://127.0.0.1:9002"
    assert HttpDoor(light).headers == {"Authorization": "Bearer k-123"}


def test_an_ingest_url_and_an_empty_key_read_alike(environ, monkeypatch):
    monkeypatch.setenv("OCRSTREAM_INGEST_URL", "https://ocr.example.com/")
    monkeypatch.setenv("OCRSTREAM_API_KEY", "")
    light, full = both()
    assert light == full
    assert HttpDoor(light).url == "https://ocr.example.com" and HttpDoor(light).headers == {}


@pytest.mark.parametrize("port", ["80a", "-1", "８０"])
def test_a_number_that_is_not_plain_digits_is_left_to_settings(environ, monkeypatch, port):
    monkeypatch.setenv("OCRSTREAM_HTTP_PORT", port)
    assert DoorSettings.from_environment() is None  # the caller reads Settings, which names the variable
    if port == "80a":
        with pytest.raises(ConfigurationError, match="http_port"):
            get_settings()


def test_variables_are_named_case_insensitively_and_the_env_file_variable_is_no_setting(tmp_path):
    env_file = tmp_path / "stack.env"
    env_file.write_text("OCRSTREAM_S3_BUCKET=from-file\nOCRSTREAM_HTTP_PORT=1\n")
    environ = {"OCRSTREAM_ENV_FILE": str(env_file), "ocrstream_http_port": "2", "HOME": str(tmp_path)}
    assert ocrstream_variables(environ, tmp_path) == {"s3_bucket": "from-file", "http_port": "2"}


def test_the_http_submit_path_imports_no_pydantic(tmp_path):
    code = ("import sys, ocrstream.cli.main, ocrstream.cli.submit\n"
            "from ocrstream.client.http_submit import DoorSettings, HttpDoor\n"
            "HttpDoor(DoorSettings.from_environment())\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pydantic', 'pydantic_settings')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path,
                         env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "OCRSTREAM_HTTP_PORT": "9003"})
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("command", [["submit", "receipt.png"], ["status"]])
def test_settings_that_cannot_work_end_a_command_with_one_line(tmp_path, command):
    (tmp_path / "receipt.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "OCRSTREAM_HTTP_PORT": "80x"}
    out = subprocess.run([sys.executable, "-m", "ocrstream.cli", *command], capture_output=True, text=True,
                         cwd=tmp_path, env=env, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.startswith("ocrstream: invalid configuration") and "http_port" in out.stderr
