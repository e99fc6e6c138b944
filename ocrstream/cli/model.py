"""Model tools: ``model export-trocr``, ``synth``, ``label-export``, ``finetune``, ``evaluate``."""

from __future__ import annotations

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
    click.echo(f"model -> {result.manifest} ({result.steps} steps, {result.train_cpu_s:.0f} CPU-s); "
               f"val CER ci {100 * result.base.cer_ci:.2f}% -> {100 * result.tuned.cer_ci:.2f}%, "
               f"WER ci {100 * result.base.wer_ci:.2f}% -> {100 * result.tuned.wer_ci:.2f}%")


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
