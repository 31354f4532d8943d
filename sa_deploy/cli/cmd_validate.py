from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from sa_deploy.cli.common import (
    add_model_args,
    add_preprocess_args,
    batch_size,
    console,
    finite_float,
    load_model,
    output_dir,
    output_file,
    positive_int,
    preprocess_overrides,
    threads,
)

EXAMPLES = """examples:
  sa-deploy validate --model sa_resnet_cifar --pretrained --data embedded \\
      --artifacts out/sa_resnet_cifar_fold.onnx out/sa_resnet_cifar_fold_fp16.onnx \\
                  out/sa_resnet_cifar_fold_int8_tensorrt_entropy.onnx --json out/validation.json
  sa-deploy validate --model sa_resnet_cifar --checkpoint best.pth --data val/ --num 1000 --max-drop 0.5 \\
      --artifacts out/sa_resnet_cifar_fold.onnx out/sa_resnet_cifar_fold_int8_tensorrt_entropy.onnx \\
      --auto-fallback --calib train/
  sa-deploy validate --model sa_resnet50 --checkpoint model_best.pth.tar --data ILSVRC2012_img_val/ \\
      --labels val.txt --num 5000 --artifacts out/sa_resnet50_fold.onnx
  sa-deploy validate --reference my_model.onnx --data val/ \
      --artifacts my_model_int8_tensorrt_entropy.onnx my_model_fp16.onnx   # no PyTorch model: vs the FP32 ONNX

Reference: --model (PyTorch FP32) or --reference FP32.onnx (onnxruntime), e.g. an ONNX file sa-deploy did not
write. Its images are preprocessed as its metadata says; a file without sa-deploy metadata uses what the
artifacts made from it by `sa-deploy quantize`/`fp16` carry (when they agree), else the preprocessing flags
(--mean/--std, ...); given flags replace those fields in every case.

Images (--data): one sub-folder per class; a flat folder of images with --labels FILE (CSV `filename,label`
with a header, or `filename label` lines as in ImageNet's val.txt; labels are 0-based class indices or the
model's class names); an .npz (images/labels); or `embedded`: the 1,000 CIFAR-10 validation images inside
sa-deploy (their card: sa_deploy/data/embedded/cifar10_sample.card.json).

Budget: the allowed top-1 drop vs the FP32 reference, in points; default 0.1 for fp32/fp16 artifacts and 1.0 for int8
(--max-drop overrides it for all). Exit code 3 when an artifact is over budget.
--auto-fallback: for an INT8 artifact over budget, re-quantize it (same method/flavour) keeping the nodes with the
worst SQNR loss in float, round by round, until it fits; needs the FP32 ONNX it came from among --artifacts.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="top-1/top-5 of the FP32 reference (PyTorch or ONNX) and each artifact on "
                                        "labeled images, drop, parity",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p, required=False)
    p.add_argument("--reference", type=Path, metavar="FP32.onnx",
                   help="compare with this FP32 ONNX file on onnxruntime instead of a PyTorch --model")
    p.add_argument("--data", type=Path, required=True, help="labeled images: one sub-folder per class, a flat folder "
                   "with --labels, an .npz, or `embedded` (see below)")
    p.add_argument("--labels", type=Path, metavar="FILE", help="labels file for a flat --data folder")
    p.add_argument("--artifacts", type=Path, nargs="+", required=True, metavar="FILE", help="artifacts to validate")
    p.add_argument("--max-drop", type=finite_float, default=None,
                   help="allowed top-1 drop in points (default: per precision, fp16 0.1, int8 1.0)")
    p.add_argument("--num", type=positive_int, default=None,
                   help="use a class-balanced sample of N images (default all)")
    p.add_argument("--batch-size", type=batch_size, default=64)
    p.add_argument("--json", type=output_file, metavar="OUT.json", help="write the report as JSON")
    p.add_argument("--auto-fallback", action="store_true", help="fix INT8 artifacts over budget (see below)")
    p.add_argument("--calib", type=Path, help="calibration images for --auto-fallback (folder, .npz or `embedded`)")
    p.add_argument("--cache-dir", type=output_dir, help="calibration range cache for --auto-fallback")
    p.add_argument("--threads", type=threads, default=None, help="CPU threads for PyTorch and onnxruntime "
                                                             "(default: all cores; use 1 on a busy machine)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_preprocess_args(p, "validate preprocesses the images with the result (see below)")
    p.set_defaults(func=run)


def _row(r, table: Table) -> None:
    par = r.parity
    status = "-" if r.drop is None else ("[green]pass[/green]" if r.passed else "[red]FAIL[/red]")
    if r.details.get("replaced_by"):
        status += f" -> {Path(r.details['replaced_by']).name}"
    table.add_row(r.name, r.precision, f"{r.top1:.2f}", f"{r.top5:.2f}",
                  "-" if r.drop is None else f"{r.drop:+.2f}" + (f" (<= {r.max_drop:g})" if r.max_drop is not None
                                                                  else ""),
                  "-" if par is None else f"{par.cosine:.5f}", "-" if par is None else f"{par.top1_agreement:.2%}",
                  status)


def _print_int8(results) -> None:
    """Per INT8 artifact: the numerics it was judged by (kernel path), both drops, and the diagnosis if any."""
    if any(r.details.get("int8") for r in results):
        from sa_deploy.util.int8_kernels import cpu_int8_path

        console.print(f"int8 kernels here: {cpu_int8_path().line()}", markup=False)
    for r in results:
        num = r.details.get("int8")
        if not num:
            continue
        path = num.get("path") or {}
        judged = "int32 Q/DQ emulation" if num["judged_by"] == "emulation" else \
            f"{path.get('runtime', 'the runtime')}'s kernels ({path.get('instructions', 'unknown')} -> " \
            f"{path.get('accumulation', '?')})"
        both = ", ".join(f"{k} {num[f'{k}_drop']:+.2f}" for k in ("kernel", "emulated")
                         if num.get(f"{k}_drop") is not None)
        console.print(f"{r.name}: judged by {judged}; drops: {both}")
        if num.get("diagnosis"):
            console.print(f"  [yellow]{num['diagnosis']}[/yellow]")


def run(args: argparse.Namespace) -> int:
    from sa_deploy import api
    from sa_deploy.errors import SADeployError
    from sa_deploy.report.render import write_json

    if (args.model is None) == (args.reference is None):
        raise SADeployError("pass --model NAME or --reference FP32.onnx" + ("" if args.model is None else
                                                                             ", not both"))
    if args.reference is not None:
        given = [f for f, v in (("--checkpoint", args.checkpoint), ("--pretrained", args.pretrained),
                                ("--num-classes", args.num_classes), ("--allow-nonfinite", args.allow_nonfinite))
                 if v]
        if given:
            raise SADeployError(f"{given[0]} describes a PyTorch --model; with --reference the ONNX file is the "
                                "reference")
    if args.auto_fallback and args.calib is None:
        raise SADeployError("--auto-fallback needs --calib DIR|FILE.npz (images to re-calibrate on)")
    for a in args.artifacts:
        if not a.exists():
            raise SADeployError(f"artifact not found: {a}")
    if args.json:  # before the work: the report must be writable
        from sa_deploy.report.render import owned_report_file
        from sa_deploy.util.atomic import check_writable

        check_writable(args.json, owned_report_file)
    overrides = preprocess_overrides(args)
    reference = args.reference if args.reference is not None else load_model(args)
    report = api.validate(reference, args.data, args.artifacts, args.max_drop, args.num, args.batch_size,
                          progress=not args.no_progress, threads=args.threads, auto_fallback=args.auto_fallback,
                          calib=args.calib, cache_dir=args.cache_dir, labels=args.labels, preprocess=overrides)
    src = report.reference_source
    if src.get("kind") == "onnx":
        console.print(f"reference: {src['path']} on onnxruntime (fp32); preprocessing from {src['preprocess_from']}")
    for fb in report.fallbacks:
        rounds = ", ".join(f"{len(x['excluded_nodes'])} float nodes: drop {x['drop']:+.2f}" for x in fb["rounds"])
        console.print(f"auto-fallback {Path(fb['artifact']).name} -> {Path(fb['quantize']['path']).name}: {rounds}")
    table = Table(title=f"accuracy on {report.reference.num_images} images of {args.data}")
    for col in ("artifact", "precision", "top-1 %", "top-5 %", "drop (budget)", "cosine", "top-1 agree", "status"):
        table.add_column(col, justify="left" if col == "artifact" else "right")
    _row(report.reference, table)
    for r in report.results:
        _row(r, table)
    console.print(table)
    _print_int8(report.results)
    if args.json:
        from sa_deploy.util.machine import machine_info

        write_json(args.json, {**report.to_dict(), "machine": machine_info(args.threads)})  # int8_kernels too
        console.print(f"report: {args.json}")
    report.raise_if_failed()
    return 0
