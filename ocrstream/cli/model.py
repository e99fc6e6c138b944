"""Model tools: ``model export-trocr``, ``synth``, ``label-export``, ``finetune``, ``evaluate``; the
registry and the live model: ``register``, ``list``, ``pull``, ``compare`` (a shadow), ``promote``."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import click

from ocrstream.cli.app import get_settings, main


@main.group()
def model() -> None:
    """Model tools: TrOCR export; synthetic lines, label export, fine-tuning and evaluation of recognisers."""


@model.command("export-trocr")
@click.argument("src", type=click.Path(exists=True, file_okay=False))
@click.argument("out", type=click.Path())
@click.option("--quantize", is_flag=True, help="Also write int8 dynamically quantised models (accuracy cost measured).")
@click.option("--opset", default=18, show_default=True)
@click.option("--keep-split", is_flag=True, help="Keep decoder + decoder-with-past beside the merged decoder.")
@click.option("--overwrite", is_flag=True)
def export_trocr_cmd(src: str, out: str, quantize: bool, opset: int, keep_split: bool, overwrite: bool) -> None:
    """Export a TrOCR checkpoint folder SRC to ONNX in OUT (needs `pip install 'ocrstream[export]'`)."""
    try:
        from ocrstream.training.trocr_export import export_trocr
    except ImportError as exc:
        raise click.ClickException(f"{exc}: install the exporter with pip install 'ocrstream[export]'") from None
    export_trocr(src, out, quantize=quantize, opset=opset, keep_split=keep_split, overwrite=overwrite)


def _training(module: str, extra: str):
    """Import ``ocrstream.training.<module>``; a missing optional dependency becomes a usage error."""
    import importlib

    try:
        return importlib.import_module(f"ocrstream.training.{module}")
    except ImportError as exc:
        raise click.ClickException(f"{exc}: install with pip install 'ocrstream[{extra}]'") from None


@model.command("synth")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--count", required=True, type=click.IntRange(1, 1_000_000), help="Lines to render.")
@click.option("--fonts", "fonts_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder of .ttf/.otf fonts (default: Debian fonts-dejavu/-liberation/-freefont, else fc-list).")
@click.option("--text", "text_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Text file: lines cut into 1..8-word spans, mixed with the generators.")
@click.option("--generators", default="number,price,date,time,code,item", show_default=True,
              help="Comma list of text generators ('' = text file only).")
@click.option("--seed", default=0, show_default=True)
@click.option("--no-degrade", is_flag=True, help="Clean renderings (no blur, noise, JPEG, skew...).")
def synth_cmd(out: Path, count: int, fonts_dir: str | None, text_file: str | None, generators: str, seed: int,
              no_degrade: bool) -> None:
    """Render COUNT labelled line images into OUT/img and OUT/lines.jsonl (needs the 'synth' extra)."""
    synth = _training("synth", "synth")
    try:
        report = synth.synthesize(out, count, fonts_dir=fonts_dir, text_file=text_file, seed=seed,
                                  generators=[g for g in generators.split(",") if g], degrade=not no_degrade)
    except synth.SynthError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{report.count} lines ({report.fonts} fonts, {report.cpu_s:.1f} CPU-s) -> {report.manifest}")


@model.command("label-export")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--manifest", "manifests", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Any {image, text} JSONL manifest (repeatable).")
@click.option("--from-store", is_flag=True, help="Lines of stored documents that a person corrected "
              "(regions.verified_text), crops from the object store (OCRSTREAM_* settings).")
@click.option("--since", default=None, help="With --from-store: only lines verified at/after this ISO time.")
def label_export_cmd(out: Path, manifests: tuple[str, ...], from_store: bool, since: str | None) -> None:
    """Write labelled lines to OUT/lines.jsonl + OUT/img/ in the training manifest format."""
    labels = _training("labels", "dev")
    if not manifests and not from_store:
        raise click.UsageError("give --manifest FILE and/or --from-store")
    n = labels.export_labels(out, manifests=manifests, settings=get_settings() if from_store else None, since=since)
    click.echo(f"{n} lines -> {out / 'lines.jsonl'}")


@model.command("finetune")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--base", type=click.Choice(["ppocr", "trocr"]), default="ppocr", show_default=True)
@click.option("--trocr-checkpoint", type=click.Path(exists=True, file_okay=False), default=None,
              help="With --base trocr: the transformers checkpoint folder to fine-tune.")
@click.option("--train", "train", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Training manifest (repeatable).")
@click.option("--train-caseless", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Training manifest whose labels are upper-cased print (e.g. SROIE): case-folded loss.")
@click.option("--val", required=True, type=click.Path(exists=True, dir_okay=False), help="Validation manifest (the gate).")
@click.option("--freeze", type=click.Choice(["backbone", "none"]), default="backbone", show_default=True)
@click.option("--lr", default=1e-4, show_default=True)
@click.option("--batch-size", default=8, show_default=True)
@click.option("--threads", default=1, show_default=True, help="torch intra-op threads.")
@click.option("--budget-min", default=60.0, show_default=True, help="CPU minutes of training (incl. validation).")
@click.option("--max-steps", default=None, type=int)
@click.option("--eval-every", default=100, show_default=True, help="Steps between validation-subset CER checks.")
@click.option("--val-limit", default=200, show_default=True, help="Validation lines read during training.")
@click.option("--checkpoint-every", default=100, show_default=True)
@click.option("--keep", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="Weights to export: best validation-subset CER seen (base included), or the last.")
@click.option("--seed", default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoints/last.pt.")
@click.option("--force", is_flag=True, help="Write the model even if it is worse than the base on --val.")
def finetune_cmd(out: Path, base: str, trocr_checkpoint: str | None, train: tuple[str, ...],
                 train_caseless: tuple[str, ...], val: str, freeze: str, lr: float, batch_size: int, threads: int,
                 budget_min: float, max_steps: int | None, eval_every: int, val_limit: int, checkpoint_every: int,
                 keep: str, seed: int, resume: bool, force: bool) -> None:
    """Fine-tune the recogniser on labelled lines; write OUT/model.onnx + OUT/manifest.json if it beats the base."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if not train and not train_caseless:
        raise click.UsageError("give at least one --train or --train-caseless manifest")
    if base == "trocr":
        if not trocr_checkpoint:
            raise click.UsageError("--base trocr needs --trocr-checkpoint DIR")
        trocr = _training("trocr_finetune", "finetune")
        result = trocr.finetune_trocr(trocr_checkpoint, [*train, *train_caseless], val, out, lr=lr,
                                      batch_size=batch_size, threads=threads, budget_cpu_s=60 * budget_min,
                                      max_steps=max_steps, seed=seed, force=force)
        click.echo(json.dumps(result, indent=2))
        return
    ft = _training("finetune", "finetune")
    cfg = ft.FinetuneConfig(train=list(train), train_caseless=list(train_caseless), val=val, out=str(out),
                            freeze=freeze, lr=lr, batch_size=batch_size, threads=threads,
                            budget_cpu_s=60 * budget_min, max_steps=max_steps, eval_every=eval_every,
                            val_limit=val_limit, checkpoint_every=checkpoint_every, keep=keep, seed=seed, resume=resume,
                            force=force)
    try:
        result = ft.finetune_ppocr(cfg)
    except ft.GateRefused as exc:
        raise click.ClickException(str(exc)) from None
    from ocrstream.ocr.recognition.model_manifest import int8_served

    click.echo(f"model -> {result.manifest} ({result.steps} steps, {result.train_cpu_s:.0f} CPU-s); "
               f"val CER ci {100 * result.base.cer_ci:.2f}% -> {100 * result.tuned.cer_ci:.2f}%, "
               f"WER ci {100 * result.base.wer_ci:.2f}% -> {100 * result.tuned.wer_ci:.2f}%; "
               f"serves in {'int8' if int8_served(result.int8) else 'fp32'}")


@model.command("evaluate")
@click.argument("models", nargs=-1, required=True)
@click.option("--set", "sets", multiple=True, required=True, type=click.Path(exists=True, dir_okay=False),
              help="Labelled manifest (repeatable).")
@click.option("--limit", default=None, type=int, help="First N lines of each set.")
@click.option("--threads", default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
def evaluate_cmd(models: tuple[str, ...], sets: tuple[str, ...], limit: int | None, threads: int, as_json: bool) -> None:
    """CER/WER (ci and cs) of each MODEL (ppocr, a fine-tuned manifest/folder, a .onnx, a TrOCR ONNX folder) per set."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from ocrstream.training.evaluate import format_scores, load_for_eval, score
    from ocrstream.training.manifest import read_manifest

    rows = []
    for name in models:
        recognizer = load_for_eval(name, threads=threads)
        for path in sets:
            result, _ = score(recognizer, read_manifest(path, limit=limit), Path(path).parent.name + "/" + Path(path).name)
            rows.append((name, result))
            if as_json:
                click.echo(json.dumps({"model": name, **result.as_dict()}))
    if not as_json:
        click.echo(format_scores(rows))


@model.command("register")
@click.argument("manifest", type=click.Path(exists=True, path_type=Path))
def register_cmd(manifest: Path) -> None:
    """Store a fine-tuned model (MANIFEST: its manifest.json or folder) in the object store under
    models/<sha256>/ (model.onnx, then manifest.json); the same model again changes nothing."""

    from ocrstream.ocr.recognition.model_manifest import ModelIntegrityError
    from ocrstream.storage.models import register_model

    try:
        registered = asyncio.run(register_model(get_settings(), manifest))
    except ModelIntegrityError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from None
    info = registered.summary()
    click.echo(f"{'registered' if registered.new else 'already registered'}: {registered.sha256} "
               f"({info['id']}, gate {'passed' if info['gate_passed'] else 'NOT passed'}) -> "
               f"s3://{get_settings().s3_bucket}/models/{registered.sha256}/")


@model.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
def list_cmd(as_json: bool) -> None:
    """Registered models (object store models/<sha256>/), newest first: id, created, base,
    training lines, validation CER ci base -> tuned, whether the gate passed, whether it serves in int8."""

    from ocrstream.storage.models import list_models

    rows = [m.summary() for m in asyncio.run(list_models(get_settings()))]
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    if not rows:
        click.echo("no registered models (ocrstream model register MANIFEST)")
        return

    def pct(v) -> str:
        return "-" if v is None else f"{100 * v:.2f}%"

    click.echo(f"{'sha256':<14} {'id':<22} {'created':<26} {'train lines':>11} {'CER ci base -> tuned':>22}  {'gate':<10}  int8")
    for r in rows:
        cer = f"{pct(r['cer_ci_base'])} -> {pct(r['cer_ci_tuned'])}"
        click.echo(f"{r['sha256'][:12] + '…':<14} {str(r['id']):<22} {str(r['created']):<26} "
                   f"{str(r['train_lines'] if r['train_lines'] is not None else '-'):>11} {cer:>22}  "
                   f"{'passed' if r['gate_passed'] else 'not passed':<10}  {'yes' if r['int8'] else 'no'}")


@model.command("promote")
@click.argument("sha")
@click.option("--force", is_flag=True, help="Promote a model that did not pass the fine-tuning gate.")
@click.option("--by", "who", default=None, help="Who promotes (recorded; default: $USER).")
def promote_cmd(sha: str, force: bool, who: str | None) -> None:
    """Make registered model SHA (sha256, a unique prefix of >= 6 hex, or its id) the live model:
    a row in PostgreSQL's model_promotions; recognize stages run with
    OCRSTREAM_FOLLOW_PROMOTED_MODEL switch to it between batches. A model that did not pass
    the gate needs --force."""

    import asyncpg

    from ocrstream.storage.db import create_pool
    from ocrstream.storage.migrate import apply_migrations
    from ocrstream.storage.models import GateNotPassedError, UnknownModelError, live_model, promote, resolve

    settings = get_settings()

    async def run() -> tuple[dict, dict | None]:
        found = await resolve(settings, sha)
        pool = await create_pool(settings, max_size=1)
        try:
            async with pool.acquire() as conn:
                await apply_migrations(conn)  # the table, when the store has not started yet
            before = await live_model(pool)
            return await promote(pool, found, who or os.environ.get("USER"), force=force), before
        finally:
            await pool.close()

    try:
        row, before = asyncio.run(run())
    except (UnknownModelError, GateNotPassedError) as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from None
    except (OSError, asyncpg.PostgresError) as exc:
        raise click.ClickException(f"PostgreSQL: {type(exc).__name__}: {exc}") from None
    click.echo(f"live model: {row['model_id']} ({row['sha256']})"
               + (" [forced past the gate]" if row["forced"] else "")
               + (f"; was {before['model_id']}" if before else "; was the configured one"))


@model.command("compare")
@click.argument("sha")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of lines.")
def compare_cmd(sha: str, as_json: bool) -> None:
    """The shadow model SHA (`ocrstream run recognize --shadow SHA`) against the live model over
    the same regions: agreement, CER ci against verified text of both, CPU per line, regions compared."""

    import asyncpg

    from ocrstream.storage.models import UnknownModelError, compare_shadow, resolve

    settings = get_settings()

    async def run() -> dict:
        found = await resolve(settings, sha)
        conn = await asyncpg.connect(settings.dsn, timeout=settings.postgres_timeout_s)
        try:
            return {"model_id": found.model_id, **await compare_shadow(conn, found.sha256)}
        finally:
            await conn.close()

    try:
        result = asyncio.run(run())
    except UnknownModelError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from None
    except asyncpg.UndefinedTableError as exc:
        raise click.ClickException(f"{exc}: no shadow has run yet (ocrstream run recognize --shadow SHA)") from None
    if as_json:
        click.echo(json.dumps(result))
        return

    def pct(v) -> str:
        return "-" if v is None else f"{100 * v:.2f}%"

    click.echo(f"shadow {result['model_id']} ({result['sha256'][:12]}…) vs the live readings")
    click.echo(f"  regions compared      {result['regions']}" +
               (f" (+{result['shadow_only']} not stored yet)" if result["shadow_only"] else ""))
    click.echo(f"  agreement             {pct(result['agreement'])}")
    click.echo(f"  verified regions      {result['verified']}")
    click.echo(f"  CER ci vs verified    shadow {pct(result['cer_ci_shadow'])}, live {pct(result['cer_ci_live'])}")
    cpu = result["cpu_ms_per_line"]
    click.echo(f"  CPU per line (shadow) {'-' if cpu is None else f'{cpu:.2f} ms'}")


@model.command("pull")
@click.argument("sha")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
def pull_cmd(sha: str, dest: Path) -> None:
    """Download registered model SHA (its sha256, a unique prefix of >= 6 hex, or its id) into
    DEST, verified; serve it with OCRSTREAM_PPOCR_MODEL=DEST/manifest.json."""

    from ocrstream.ocr.recognition.model_manifest import ModelIntegrityError
    from ocrstream.storage.models import UnknownModelError, fetch_model, resolve

    async def pull() -> Path:
        found = await resolve(get_settings(), sha)
        return await fetch_model(get_settings(), found.sha256, dest)

    try:
        path = asyncio.run(pull())
    except (UnknownModelError, ModelIntegrityError) as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from None
    click.echo(f"{path}")
