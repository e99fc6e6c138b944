"""Where ocrstream's settings come from, without pydantic: ``OCRSTREAM_*`` variables and the dotenv file.

:class:`ocrstream.settings.Settings` (pydantic-settings) reads every setting from the environment
and, for the variables the environment lacks, from a dotenv file (:func:`env_file_path`). Importing
pydantic and pydantic-settings and building ``Settings`` takes ~0.15 s of a new process (measured
for issue 22 on a 2-vCPU host: ``python -c "import ocrstream.settings"`` 0.20 s against 0.03 s for an
empty interpreter). A short-lived client that needs only a handful of values (``ocrstream submit``
through the ingest HTTP door: :class:`ocrstream.client.http_submit.DoorSettings`) reads them here
with :func:`ocrstream_variables`, the same variables and the same precedence, and leaves anything
that needs validation to ``Settings``.

The defaults of the settings read here live here too (``DEFAULT_*``); ``Settings`` declares its
fields with them, so the two readers cannot drift apart (``tests/unit/test_environment.py`` sets
them against each other).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["DEFAULT_HTTP_HOST", "DEFAULT_HTTP_PORT", "DEFAULT_MAX_DOCUMENT_BYTES", "DEFAULT_S3_BUCKET",
           "DEV_ENV_FILE", "ENV_FILE_VARIABLE", "PREFIX", "env_file_path", "env_pointer_file",
           "ocrstream_variables", "record_env_file"]

#: prefix of every setting's environment variable (``http_port`` -> ``OCRSTREAM_HTTP_PORT``).
PREFIX = "OCRSTREAM_"
#: the variable naming the dotenv file to read (not a setting itself).
ENV_FILE_VARIABLE = "OCRSTREAM_ENV_FILE"
#: the dotenv file ``ocrstream dev up`` writes, relative to the directory it ran in.
DEV_ENV_FILE = Path(".ocrstream/dev/stack.env")

#: the address the ingest HTTP door binds (``OCRSTREAM_HTTP_HOST``).
DEFAULT_HTTP_HOST = "127.0.0.1"
#: the port of the ingest HTTP door (``OCRSTREAM_HTTP_PORT``).
DEFAULT_HTTP_PORT = 8080
#: the largest document the doors accept, bytes (``OCRSTREAM_MAX_DOCUMENT_BYTES``): 64 MiB.
DEFAULT_MAX_DOCUMENT_BYTES = 64 * 1024 * 1024
#: the bucket of originals and crops (``OCRSTREAM_S3_BUCKET``).
DEFAULT_S3_BUCKET = "ocrstream"


def env_pointer_file(environ: Mapping[str, str] | None = None) -> Path:
    """Where ``ocrstream dev up`` records the absolute path of its settings file:
    ``$XDG_STATE_HOME/ocrstream/env-file`` (XDG Base Directory spec; default ``$HOME/.local/state``),
    of ``environ`` (default: this process's environment)."""
    environ = os.environ if environ is None else environ
    state_home = environ.get("XDG_STATE_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".local" / "state")
    return Path(state_home) / "ocrstream" / "env-file"


def record_env_file(env_file: Path) -> Path:
    """Record ``env_file`` (made absolute) as the user's current stack settings; returns the pointer file."""
    pointer = env_pointer_file()
    pointer.parent.mkdir(parents=True, exist_ok=True)
    pointer.write_text(str(Path(env_file).absolute()) + "\n")
    return pointer


def env_file_path(environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> Path | None:
    """The dotenv file settings are read from, for a process with ``environ`` in ``cwd`` (default:
    this one): ``OCRSTREAM_ENV_FILE`` when set (None if it is not a file), else
    ``.ocrstream/dev/stack.env`` in ``cwd`` if present, else the file recorded by the last
    ``ocrstream dev up`` (:func:`env_pointer_file`) if it still exists."""
    environ = os.environ if environ is None else environ
    cwd = Path.cwd() if cwd is None else cwd
    if ENV_FILE_VARIABLE in environ:
        named = cwd / environ[ENV_FILE_VARIABLE]
        return named if named.is_file() else None
    if (cwd / DEV_ENV_FILE).is_file():
        return cwd / DEV_ENV_FILE
    try:
        recorded = Path(env_pointer_file(environ).read_text().strip())
    except OSError:
        return None
    return recorded if recorded.is_absolute() and recorded.is_file() else None


def ocrstream_variables(environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> dict[str, str]:
    """Every setting given for a process with ``environ`` in ``cwd`` (default: this one), as
    ``{field name: raw text}`` (``OCRSTREAM_HTTP_PORT=8081`` -> ``{"http_port": "8081"}``).

    As pydantic-settings reads them for :class:`ocrstream.settings.Settings` (``env_prefix``, names
    case-insensitive): the dotenv file's ``OCRSTREAM_*`` entries (:func:`env_file_path`, parsed by
    python-dotenv as pydantic-settings does; entries without a value skipped), overridden by the
    environment's. ``OCRSTREAM_ENV_FILE`` is not a setting and is left out. No value is validated.

    Raises:
        OSError: the dotenv file exists but cannot be read.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, str] = {}
    path = env_file_path(environ, cwd)
    if path is not None:
        from dotenv import dotenv_values  # only when there is a file: a few ms

        values.update(_settings_of(dotenv_values(path)))
    values.update(_settings_of(environ))
    return values


def _settings_of(variables: Mapping[str, str | None]) -> dict[str, str]:
    """``{field name: value}`` of the ``OCRSTREAM_*`` entries of ``variables`` (case-insensitive)."""
    return {name.upper().removeprefix(PREFIX).lower(): value for name, value in variables.items()
            if value is not None and name.upper().startswith(PREFIX) and name.upper() != ENV_FILE_VARIABLE}
