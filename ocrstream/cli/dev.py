"""The embedded local stack and the demo: ``dev up``, ``dev down``, ``demo``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ocrstream.cli.app import main


@main.group()
def dev() -> None:
    """The embedded local stack (Kafka API, S3, PostgreSQL) from registry packages."""


@dev.command("up")
@click.option("--state-dir", default=".ocrstream/dev", type=click.Path(path_type=Path), show_default=True)
@click.option("--kafka-storage", type=click.Choice(["s3", "memory"]), default="s3", show_default=True,
              help="Where the broker keeps topics: the embedded S3 (durable: survives a broker crash "
                   "and restarts), or memory (faster; lost when the broker stops).")
def dev_up(state_dir: Path, kafka_storage: str) -> None:
    """Start the stack in the background and write its settings to STATE_DIR/stack.env.

    On a stack whose services partly died, brings the dead ones back on the same ports and data.
    Data is kept across `dev down` / `dev up` (remove it with `dev down --purge`).
    """
    from ocrstream.devstack import EmbeddedStack, read_running

    endpoints = read_running(state_dir)
    if endpoints is None:
        endpoints = EmbeddedStack(state_dir, kafka_storage=kafka_storage).start()
    env_file = (state_dir / "stack.env").absolute()
    endpoints.write_env_file(env_file)
    from ocrstream.environment import record_env_file

    pointer = record_env_file(env_file)
    click.echo(f"stack up; settings in {env_file} (mode 0600), recorded in {pointer}: ocrstream commands "
               "read it from any directory (another file: --env-file FILE or OCRSTREAM_ENV_FILE=FILE)")
    for key, value in endpoints.as_env().items():
        shown = "********  (in the file)" if is_secret_setting(key) else value
        click.echo(f"export {key}={shown}")
    from ocrstream.devstack.monitoring import write_monitoring

    mon = write_monitoring(state_dir)
    click.echo(f"monitoring (README \"Local monitoring\"): prometheus --config.file={mon}/prometheus.yml "
               f"--storage.tsdb.path={mon}/data; Grafana: GF_PATHS_PROVISIONING={mon}/grafana/provisioning")


def is_secret_setting(env_name: str) -> bool:
    """True for variables whose value is a secret (keys, passwords, DSNs that carry a password)."""
    return any(word in env_name for word in ("SECRET", "PASSWORD", "DSN", "API_KEY"))


@dev.command("down")
@click.option("--state-dir", default=".ocrstream/dev", type=click.Path(path_type=Path), show_default=True)
@click.option("--purge", is_flag=True, help="Also delete the stack's data (topics, objects, database).")
@click.option("--keep-stages", is_flag=True,
              help="Leave the `ocrstream run` processes of this stack running (they carry on after `dev up`).")
def dev_down(state_dir: Path, purge: bool, keep_stages: bool) -> None:
    """Stop the stack started by ``dev up`` (by its recorded PIDs) and, first, the ``ocrstream run``
    processes on this host that use it (SIGTERM; SIGKILL after 20 s); its data is kept unless --purge."""
    from ocrstream.devstack import purge as purge_data
    from ocrstream.devstack import stop_running

    env_file = state_dir / "stack.env"
    if not keep_stages and env_file.is_file():
        from ocrstream.ops.launcher import stop_local_processes
        from ocrstream.settings import Settings

        stack_env = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
        stopped = stop_local_processes(Settings.from_env(stack_env))  # this stack's, whatever the shell exports
        if stopped:
            click.echo("stopped " + ", ".join(f"{name} (pid {pid})" for name, pid in stopped))
    click.echo("stack stopped" if stop_running(state_dir) else "no stack running")
    if purge:
        click.echo(f"data in {state_dir} removed" if purge_data(state_dir) else "no data to remove")


@main.command()
@click.option("--input", "input_dir", default=None,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of documents to process (e.g. ../shared/data/sroie-dev/pages/img); "
                   "default: the checkout's samples/.")
@click.option("--state-dir", default=".ocrstream/demo", type=click.Path(path_type=Path), show_default=True)
@click.option("--timeout", default=1800.0, show_default=True, help="Seconds to wait for all results.")
def demo(input_dir: Path, state_dir: Path, timeout: float) -> None:
    """Run the whole pipeline on the embedded stack over INPUT, print every document's text."""
    from ocrstream.ops.demo import SAMPLES, run_demo

    if input_dir is None:
        if not SAMPLES.is_dir():
            raise click.UsageError(f"no sample documents at {SAMPLES} (an installed package ships none): "
                                   "pass --input DIR")
        input_dir = SAMPLES
    sys.exit(run_demo(input_dir, state_dir, timeout))
