"""What each attention module of SA-Net's comparison (SA, SE, CBAM, ECA, GC) costs once deployed, in one run.

    python scripts/attention_table.py             # 224x224 (the -50 models) and 32x32 (the small variants)
    python scripts/attention_table.py --quick     # 32x32 only, 2 short rounds: minutes on 2 cores

Writes its tables into docs/attention.md (between the `attention-table` markers of each input size; the rest of
the page is hand-written) and every number into <work>/attention.json. Per module and input size:

- parameters and multiply-adds over the attention-free floor (the same ResNet with each attention module replaced
  by nn.Identity, ``bench.variants.without_attention``). Multiply-adds: torch.utils.flop_counter.FlopCounterMode on
  the PyTorch model at batch 1, total FLOPs / 2; it counts convolutions, linear layers and matmuls only (the
  papers' GFLOPs convention), not elementwise, pooling, softmax or normalization ops: SA, whose work is all
  elementwise, adds ~0 by this count, which is why the latency columns are the better measure of cost;
- ONNX nodes per module, naive export (lowering none) vs deploy form (lowering fold: SA's fold, the registered form
  of the others), with the highest tensor rank and the Shape/Gather nodes inside the modules;
- latency over the floor on each CPU runtime available (onnxruntime; OpenVINO with the f32 hint) at batch 1 and 8,
  naive and deploy form: per runtime, one interleaved run over every file of that input size (bench.timing), so
  that the ratios share the machine's state; every floor is the same network, so one floor file serves all
  modules. The runtimes are timed one after the other, not interleaved with each other: measured here,
  onnxruntime's worker threads slow the OpenVINO call that follows them (the OpenVINO floor at 32x32 took 4.1 ms
  interleaved with onnxruntime vs 0.9 ms alone);
- CIFAR-10 validation top-1 of the trained small variant, from its model card (sa_deploy/weights/<name>.card.json),
  else "not trained yet";
- INT8 top-1 drop (tensorrt and cpu flavours, entropy calibration) on the embedded CIFAR-10 sample, for trained
  weights only ("-" otherwise: a drop of random weights says nothing);
- the TensorRT lint verdict and CoreML fp32 conversion + parity in the reference executor (naive and deploy).

Weights: the embedded trained ones where a model has them, else seeded random ones (models.random_weights)."""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

import onnx
import torch
from torch.utils.flop_counter import FlopCounterMode

from sa_deploy import api
from sa_deploy.bench.timing import Artifact, available_runtimes, bench_group
from sa_deploy.bench.variants import without_attention
from sa_deploy.exporters.inspect import module_graph_facts
from sa_deploy.exporters.onnx import export_onnx
from sa_deploy.models import create_model, get_spec
from sa_deploy.models.random_weights import randomize
from sa_deploy.util.machine import machine_info

ROOT = Path(__file__).resolve().parents[1]
# module attribute -> (label, ImageNet model, small 32x32 variant)
MODULES = {"sa": ("SA", "sa_resnet50", "sa_resnet_cifar"), "se": ("SE", "se_resnet50", "se_resnet_cifar"),
           "cbam": ("CBAM", "cbam_resnet50", "cbam_resnet_cifar"), "eca": ("ECA", "eca_resnet50", "eca_resnet_cifar"),
           "gc": ("GC", "gc_resnet50", "gc_resnet_cifar")}
RUNTIMES = ("onnxruntime", "openvino")  # the CPU runtimes timed (OpenVINO with its f32 hint)
FLAVOURS = ("tensorrt", "cpu")
LOWERINGS = {"naive": "none", "deploy": "fold"}
# default (rounds, calls per round) per input size: a 32x32 call takes ~0.5 ms, so it needs many more calls per
# round than a 224x224 one (~20 ms) for a round's median to rise above the timer's and the scheduler's noise
TIMING = {224: (5, 10), 32: (7, 200)}
QUICK_TIMING = (2, 3)


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


def load(name: str) -> tuple[torch.nn.Module, bool]:
    """(model, trained): the embedded trained weights where the model has them, else seeded random ones."""
    if get_spec(name).pretrained_file:
        return create_model(name, pretrained=True), True
    return randomize(create_model(name)), False


def parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def multiply_adds(model: torch.nn.Module, size: int) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() // 2


def card_top1(name: str) -> float | None:
    card = Path(str(resources.files("sa_deploy") / "weights" / f"{name}.card.json"))
    return json.loads(card.read_text()).get("val_top1") if card.is_file() else None


def lint_verdict(path: Path) -> str:
    report = api.lint_onnx(path)
    if report.passed:
        return "pass"
    more = f" (+{len(report.errors) - 1} more)" if len(report.errors) > 1 else ""
    return f"fail: {report.errors[0].message.split(' (')[0]}{more}"


def coreml_verdict(model: torch.nn.Module, out: Path, lowering: str, size: int) -> str:
    """fp32 conversion, then parity in the runner CoreML has here (the numpy reference executor off macOS)."""
    try:
        exp = api.export_coreml(model, out, "fp32", lowering, parity=False).export
    except Exception as exc:  # noqa: BLE001 - a verdict: what failed, in one line
        return f"conversion fails ({type(exc).__name__}: {str(exc).splitlines()[0][:80]})"
    try:
        stats, _ = api.coreml_parity(model, exp.path, size, "fp32")
    except Exception as exc:  # noqa: BLE001 - the runner cannot execute it: say which op
        missing = str(exc).split("op(s):")[-1].strip() if "op(s):" in str(exc) else str(exc).splitlines()[0][:60]
        return f"converts; no reference kernel: {missing}"
    worst = max(s.max_abs for s in stats)
    return ("ok" if all(s.passed for s in stats) else "PARITY FAILS") + f" ({worst:.0e})"


def int8_drops(model: torch.nn.Module, deploy_onnx: Path) -> dict[str, float]:
    """Top-1 drop of each INT8 flavour vs PyTorch on the embedded CIFAR-10 sample (1,000 validation images)."""
    paths = {f: api.quantize(deploy_onnx, "embedded", flavour=f).path for f in FLAVOURS}
    report = api.validate(model, "embedded", list(paths.values()), progress=False)
    by_name = {r.name: r.drop for r in report.results}
    return {f: by_name[p.name] for f, p in paths.items()}


def measure_size(size: int, work: Path, args: argparse.Namespace, runtimes: tuple[str, ...]) -> dict[str, Any]:
    """Every column for one input size: the -50 models at 224, the small variants at 32."""
    out = work / f"{size}"
    out.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict[str, Any]] = {}
    artifacts: list[Artifact] = []
    group = f"attention {size}x{size}"
    floor_params = floor_macs = None
    for attr, (label, big, small) in MODULES.items():
        name = big if size == 224 else small
        log(f"{name}: build, count, export")
        model, trained = load(name)
        model = model.eval()
        if floor_params is None:  # every floor is the same network: the first one serves all
            floor = without_attention(model)
            floor_params, floor_macs = parameters(floor), multiply_adds(floor, size)
            export_onnx(floor, out / "floor.onnx", lowering="none", input_size=size)
            artifacts.append(Artifact(group, "floor", out / "floor.onnx"))
        row: dict[str, Any] = {"module": label, "model": name, "trained": trained,
                               "params": parameters(model) - floor_params, "floor_params": floor_params,
                               "macs": multiply_adds(model, size) - floor_macs, "floor_macs": floor_macs}
        files = {}
        for form, lowering in LOWERINGS.items():
            files[form] = out / f"{name}_{lowering}.onnx"
            export_onnx(model, files[form], lowering=lowering, input_size=size)
            facts = module_graph_facts(onnx.load(str(files[form]), load_external_data=False), attr)
            row[form] = {**facts.to_dict(), "lint": lint_verdict(files[form])}
            artifacts.append(Artifact(group, f"{attr} {form}", files[form]))
        if not args.no_coreml:
            log(f"{name}: CoreML fp32 (naive, deploy)")
            for form, lowering in LOWERINGS.items():
                row[form]["coreml"] = coreml_verdict(model, out / "coreml" / form, lowering, size)
        row["top1"] = card_top1(name) if size == 32 else None
        if trained and size == 32:
            log(f"{name}: INT8 {', '.join(FLAVOURS)} on the embedded sample")
            row["int8_drop"] = int8_drops(model, files["deploy"])
        rows[attr] = row
    default_rounds, default_iters = QUICK_TIMING if args.quick else TIMING[size]
    rounds, iters = args.rounds or default_rounds, args.iters or default_iters
    log(f"{group}: timing {len(artifacts)} files on {', '.join(runtimes)}, batch {args.batch}, "
        f"{rounds} rounds x {iters} calls")
    # bench_group times each runtime in its own interleaved run (a runtime's spinning threads slow the next one's)
    timing = bench_group(artifacts, tuple(args.batch), rounds, iters, threads=args.threads, naive="-",
                         runtimes=runtimes, progress=lambda m: log(f"  {m}"))
    for r in timing:
        if r.variant != "floor":
            attr, form = r.variant.split()
            rows[attr].setdefault("latency", {})[f"{r.runtime} b{r.batch} {form}"] = {
                "vs_floor": r.vs_floor, "median_ms": r.median_ms}
        else:
            rows[next(iter(rows))].setdefault("floor_ms", {})[f"{r.runtime} b{r.batch}"] = r.median_ms
    return {"size": size, "rows": rows, "runtimes": list(runtimes), "batches": list(args.batch),
            "rounds": rounds, "iters": iters}


def _ratio(row: dict, key: str) -> str:
    v = row.get("latency", {}).get(key, {}).get("vs_floor")
    return f"{v:.2f}x" if v is not None else "-"


def render(result: dict[str, Any], command: str, machine: dict[str, str], quick: bool) -> str:
    size, rows = result["size"], result["rows"]
    first = next(iter(rows.values()))
    where = "parity in the reference executor" if sys.platform != "darwin" else "parity on CoreML"
    lines = [f"Measured by `{command}` ({time.strftime('%Y-%m-%d')}; {machine['summary']}; "
             f"{result['rounds']} rounds x {result['iters']} calls per file and batch, interleaved). Floor: "
             f"{first['floor_params'] / 1e6:.3f}M parameters, {first['floor_macs'] / 1e6:.1f}M multiply-adds.", "",
             "| module | model | params over floor | multiply-adds over floor | ONNX nodes per module, naive -> deploy "
             f"| max rank | Shape/Gather per module | TensorRT lint, naive / deploy | CoreML fp32 ({where}; max abs), "
             "naive / deploy |",
             "|---|---|---:|---:|---|---|---|---|---|"]
    for row in rows.values():
        n, d = row["naive"], row["deploy"]
        lines.append(
            f"| {row['module']} | `{row['model']}` | +{row['params']:,} ({row['params'] / row['floor_params']:+.2%}) "
            f"| +{row['macs'] / 1e6:.2f}M ({row['macs'] / row['floor_macs']:+.2%}) "
            f"| {n['nodes_max']} -> {d['nodes_max']} | {n['max_rank']} -> {d['max_rank']} "
            f"| {n['shape_ops'] // max(n['modules'], 1)} -> {d['shape_ops'] // max(d['modules'], 1)} "
            f"| {n['lint']} / {d['lint']} | {n.get('coreml', 'not run')} / {d.get('coreml', 'not run')} |")
    keys = [f"{rt} b{b}" for rt in result["runtimes"] for b in result["batches"]]
    # accuracy belongs to the trained small variants: their columns are in the 32x32 table only
    accuracy = size == 32
    lines += ["", "Latency over the floor (same runtime, same batch), naive / deploy form"
              + ("; accuracy of the trained small variant (INT8 drop: top-1 points lost vs PyTorch on the embedded"
                 " sample; negative: gained):"
                 if accuracy else " (accuracy: the trained small variants, in the 32x32 table):"), "",
              "| module | " + " | ".join(keys) + " |"
              + (" CIFAR-10 top-1 | INT8 drop tensorrt | INT8 drop cpu |" if accuracy else ""),
              "|---|" + "---:|" * len(keys) + ("---:|---:|---:|" if accuracy else "")]
    for row in rows.values():
        cells = [f"{_ratio(row, k + ' naive')} / {_ratio(row, k + ' deploy')}" for k in keys]
        if accuracy:
            drops = row.get("int8_drop", {})
            cells.append(f"{row['top1']:.2f}" if row.get("top1") is not None else "not trained yet")
            cells += [f"{drops[f]:+.2f}" if f in drops else "-" for f in FLAVOURS]
        lines.append(f"| {row['module']} | " + " | ".join(cells) + " |")
    floor_ms = first.get("floor_ms", {})
    lines += ["", "Floor latency (median ms): " + ", ".join(f"{k} {v:.2f}" for k, v in floor_ms.items()) + "."]
    if quick:
        lines += ["", "**Quick mode**: a few short rounds check that the whole measurement runs; on a shared machine "
                  "its latency ratios are noise. Run the script without `--quick` on a quiet machine for the table."]
    return "\n".join(lines)


def write_block(doc: Path, size: int, text: str) -> None:
    """Replace the block between this size's markers in ``doc`` (appended when the markers are missing)."""
    begin, end = f"<!-- attention-table {size} begin -->", f"<!-- attention-table {size} end -->"
    block = f"{begin}\n{text}\n{end}"
    page = doc.read_text() if doc.is_file() else "# The attention family, deployed\n"
    if begin in page and end in page:
        page = page[:page.index(begin)] + block + page[page.index(end) + len(end):]
    else:
        page = page.rstrip("\n") + f"\n\n## {size}x{size}\n\n{block}\n"
    doc.write_text(page)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="32x32 only, 2 rounds of 3 calls (default: 224 and 32)")
    p.add_argument("--sizes", type=int, nargs="+", choices=(224, 32), help="input sizes (default: 224 32)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes timed (default: 1 8)")
    p.add_argument("--rounds", type=int, help="interleaved timing rounds (default 5 at 224, 7 at 32; --quick 2)")
    p.add_argument("--iters", type=int,
                   help="timed calls per file, batch and round (default 10 at 224, 200 at 32; --quick 3)")
    p.add_argument("--threads", type=int, default=None, help="runtime threads (default: all cores)")
    p.add_argument("--no-coreml", action="store_true", help="skip the CoreML conversions")
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "attention.md", help="page to write the tables into")
    p.add_argument("--work", type=Path, default=ROOT / "out" / "attention", help="ONNX / CoreML files, JSON")
    args = p.parse_args(argv)
    args.sizes = args.sizes or ([32] if args.quick else [224, 32])
    runtimes = tuple(rt for rt in RUNTIMES if rt in available_runtimes())
    command = "python scripts/attention_table.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    machine = machine_info(args.threads)
    results = {}
    for size in args.sizes:
        results[size] = measure_size(size, args.work, args, runtimes)
        write_block(args.doc, size, render(results[size], command.strip(), machine, args.quick))
        log(f"wrote the {size}x{size} table into {args.doc}")
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "attention.json").write_text(json.dumps({"command": command.strip(), "machine": machine,
                                                          "results": results}, indent=1, default=str))
    log(f"wrote {args.work / 'attention.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
