"""`sa-deploy run`: checkpoint -> model -> lowerings -> ONNX FP32/FP16/INT8 (+ CoreML, TensorRT when available)
-> parity -> accuracy -> latency -> report. Stages are composed from a RunPlan; the CLI is a thin layer over run().

A stage that cannot run (missing optional library, no GPU) is listed as skipped with its reason; an artifact that
fails is listed as failed with its reason, and the run goes on."""
from __future__ import annotations

import os
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from sa_deploy import __version__, api
from sa_deploy.backends import TorchRunner
from sa_deploy.backends.manager import BuildContext, SkipArtifact
from sa_deploy.errors import BudgetExceededError, SADeployError
from sa_deploy.models import create_model
from sa_deploy.plan import RunPlan, resolve_data
from sa_deploy.util.machine import machine_info
from sa_deploy.validate.accuracy import (
    Predictions,
    budget_for,
    evaluate_artifact,
    predict,
    score,
    subset_budget,
    topk_accuracy,
)


@dataclass
class Artifact:
    name: str
    format: str
    precision: str
    path: Path | None
    lowering: str | None = None
    variant: str | None = None  # shown in the precision column, e.g. "int8 tensorrt"
    status: str = "ok"
    reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    runner_options: dict[str, Any] = field(default_factory=dict)  # e.g. OpenVINO's precision_hint

    def to_dict(self) -> dict:
        size = _size_mb(self.path) if self.path and self.path.exists() else None
        return {"name": self.name, "format": self.format, "precision": self.precision, "lowering": self.lowering,
                "variant": self.variant or self.precision, "path": str(self.path) if self.path else None,
                "size_mb": size, "status": self.status,
                "reason": self.reason, "runner_options": self.runner_options, **self.metrics, **self.extra}


def _size_mb(path: Path) -> float:
    """The artifact and its companion files (an IR's .bin, an engine's sidecar), as its backend counts them."""
    from sa_deploy.backends import backend_for

    return round(backend_for(path).size_of(path) / 1e6, 3)


class Stages:
    """Records each stage's status and time; prints one line per stage."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.records: list[dict] = []
        self.log = log
        self.current = "setup"

    @contextmanager
    def stage(self, name: str) -> Iterator[dict]:
        rec = {"name": name, "status": "ok", "reason": None}
        t = time.perf_counter()
        self.current = name
        self.log(f"[{len(self.records) + 1}] {name} ...")
        try:
            yield rec
        except BudgetExceededError as exc:  # a gate (e.g. export parity) failed this stage's artifact: go on
            rec["status"], rec["reason"] = "failed", str(exc)
        except SkipArtifact as exc:  # this machine cannot make it (e.g. no bf16): not a failure
            rec["status"], rec["reason"] = "skipped", str(exc)
        except SADeployError:
            rec["status"] = "failed"
            raise
        except Exception as exc:  # a broken stage is reported, the run goes on
            rec["status"], rec["reason"] = "failed", f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            if os.environ.get("SA_DEPLOY_DEBUG"):
                traceback.print_exc()
        finally:
            rec["seconds"] = round(time.perf_counter() - t, 2)
            self.records.append(rec)
            note = f" ({rec['reason']})" if rec.get("reason") else ""
            self.log(f"    {rec['status']} in {rec['seconds']:.1f}s{note}")

    def skip(self, name: str, reason: str) -> None:
        self.records.append({"name": name, "status": "skipped", "reason": reason, "seconds": 0.0})
        self.log(f"[{len(self.records)}] {name}: skipped ({reason})")


def run(plan: RunPlan, log: Callable[[str], None] = print) -> dict:
    """Runs the whole plan and writes the report; returns the report dict.

    Before any stage runs: the plan is checked as a whole, the data is found and read, the checkpoint loaded, and
    every file the run will write is checked (none may be a folder or a file sa-deploy did not write). A stage
    whose artifact fails (a parity or budget gate included) is recorded and the run goes on; an error that stops
    the run says which artifacts were written (and are valid) and which were not."""
    t_start = time.perf_counter()
    plan.check()
    data = resolve_data(plan)
    model = create_model(plan.model, checkpoint=plan.checkpoint, pretrained=plan.checkpoint is None)
    plan = distinct_lowerings(plan, model, log)
    out = Path(plan.out)
    for path in planned_outputs(plan):
        api.check_output(path)
    deploy = model.deploy_config
    cfg = deploy.preprocess
    val = data.val.open(cfg, num=plan.val_num, seed=plan.seed)
    calib = data.calib.open(cfg, num=plan.calib_num, seed=plan.seed)
    data_source = data.describe(len(val), len(calib))
    log(f"data: {data_source}" + (f" ({data.origin})" if data.embedded else ""))
    if not val.labeled:
        raise SADeployError(f"the validation images ({data_source}) are not labeled: accuracy needs class folders, "
                            "a labels file or an .npz with labels")
    val.load()  # read (and cached) now: a data problem stops the run before anything is written
    if plan.int8_flavours or (plan.coreml and "w8a8" in plan.coreml_precisions):
        calib.load()
    out.mkdir(parents=True, exist_ok=True)
    artifacts: list[Artifact] = []
    stages = Stages(log)
    try:
        return _run_stages(plan, model, val, calib, data, data_source, out, stages, artifacts, t_start)
    except SADeployError as exc:
        exc.args = (f"{exc}; the run stopped at '{stages.current}': {progress_note(plan, artifacts)}",)
        raise


def distinct_lowerings(plan: RunPlan, model, log: Callable[[str], None] = print) -> RunPlan:
    """The plan with one export per distinct graph: fold and reshape-transpose differ only in how they write SA,
    so a model without SA layers (SE-, CBAM-, ECA-, GC-ResNet) gets the first of them alone; its other attention
    modules take the same deploy forms in either."""
    from sa_deploy.rewrite.lowering import count_sa_layers

    if count_sa_layers(model):
        return plan
    kept = [lw for i, lw in enumerate(plan.lowerings)
            if lw == "none" or not any(k != "none" for k in plan.lowerings[:i])]
    if kept != plan.lowerings:
        dropped = [lw for lw in plan.lowerings if lw not in kept]
        log(f"{plan.model} has no SA layer: {', '.join(dropped)} would export the same graph as {kept[0]}; "
            f"exporting {', '.join(kept)}")
    return replace(plan, lowerings=kept)


def planned_outputs(plan: RunPlan) -> list[Path]:
    """Every file or package the plan may write (for the checks before a run starts): each planned artifact
    (RunPlan.artifacts), its companion files (an IR's .bin), and the reports."""
    from sa_deploy.backends import get_backend
    from sa_deploy.report.render import report_paths

    paths: list[Path] = []
    for spec in plan.artifacts():
        backend = get_backend(spec.backend)
        paths += [spec.path] + [spec.path.with_suffix(s) for s in backend.companion_suffixes]
    return list(dict.fromkeys(paths)) + report_paths(Path(plan.out))


def progress_note(plan: RunPlan, artifacts: list[Artifact]) -> str:
    """Which artifacts of the plan were written (and are valid) and which were not: one phrase."""
    done = [a.path.name for a in artifacts if a.status == "ok" and a.path is not None and a.path.exists()]
    failed = [a.name for a in artifacts if a.status != "ok"]
    made = {a.name for a in artifacts}
    # what this machine can build: runtimes it cannot run are skipped stages, not missing artifacts (and the bf16
    # row needs a bf16 CPU)
    from sa_deploy.backends import get_backend

    planned = [s.name for s in plan.artifacts() if s.name != "openvino-bf16"
               and get_backend(s.backend).is_available() is None]
    if _gateless_cpu_qdq(artifacts) is not None:  # no SA gate: OpenVINO's INT8 comes from the cpu file itself
        planned = [n for n in planned if n != "onnx-int8-cpu-float-gate"]
    missing = failed + [n for n in planned if n not in made] + ["report"]
    return (f"written and valid: {', '.join(done) or 'none'} (in {plan.out}); not made: {', '.join(missing)}")


def _run_stages(plan: RunPlan, model, val, calib, data, data_source: str, out: Path, stages: "Stages",
                artifacts: list[Artifact], t_start: float) -> dict:
    """The stages, in order; ``val`` / ``calib`` are the opened (and read) sources, ``data`` what the resolver
    found (data.resolve.LabeledData)."""
    deploy = model.deploy_config
    cfg = deploy.preprocess
    _build_artifacts(plan, model, calib, out, stages, artifacts)
    base = next((a for a in artifacts if a.format == "onnx" and a.precision == "fp32" and a.status == "ok"), None)
    if base is None:
        raise SADeployError("no ONNX export succeeded; see the stage notes above")
    _tensorrt_lint_stage(artifacts, stages)

    report_sensitivity: list[dict] = []
    int8_trt = next((a for a in artifacts if a.name == "onnx-int8-tensorrt" and a.status == "ok"), None)
    if plan.sensitivity and int8_trt is not None:
        with stages.stage("INT8 per-layer sensitivity (SQNR)"):
            probe = data.calib.open(cfg, num=min(64, plan.calib_num), seed=plan.seed + 1)
            report_sensitivity = [r.to_dict() for r in api.sensitivity(base.path, int8_trt.path, probe)]

    reference: dict[str, Any] = {}
    with stages.stage(f"accuracy + parity on {len(val)} validation images"):
        with TorchRunner(model, plan.threads) as torch_runner:
            ref_pred = predict(torch_runner, val, desc="pytorch fp32")
            x1 = next(val.batches(plan.latency_batch))[0]
            ref_latency = float(np.median(torch_runner.latency_ms(x1, iters=plan.latency_iters)))
        ref = score("pytorch fp32", "fp32", ref_pred)
        reference = {"top1": ref.top1, "top5": ref.top5, "images": ref.num_images, "latency_ms": ref_latency}
        # CoreML off macOS runs in the numpy reference executor (slow): a stratified subset, with its own reference
        subset = None
        for art in artifacts:
            if art.status != "ok" or art.path is None:
                continue
            source, ref_of_source = val, ref_pred
            if art.format == "coreml" and plan.coreml_val_num and plan.coreml_val_num < len(val):
                if subset is None:
                    sub = data.val.open(cfg, num=plan.coreml_val_num, seed=plan.seed)
                    with TorchRunner(model, plan.threads) as torch_runner:
                        subset = (sub, predict(torch_runner, sub, desc="pytorch fp32 (subset)"))
                source, ref_of_source = subset
            try:
                _evaluate(art, source, ref_of_source, x1, plan, sampled=source is not val)
            except SADeployError as exc:
                art.status, art.reason = "failed", str(exc)
            except Exception as exc:  # noqa: BLE001 - one artifact failing must not stop the others
                art.status, art.reason = "failed", f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    passed = _apply_budget(plan, artifacts)
    report = {
        "sa_deploy_version": __version__, "plan": plan.to_dict(), "machine": machine_info(),
        "model": {"name": deploy.name, "checkpoint": deploy.checkpoint, "checkpoint_sha256": deploy.checkpoint_sha256,
                  "parameters": int(sum(p.numel() for p in model.parameters())), "preprocess": cfg.to_dict()},
        "data": {"source": data_source, "origin": data.origin, "embedded": data.embedded, "val": str(data.val),
                 "val_images": len(val), "val_skipped": len(val.skipped), "calib": str(data.calib),
                 "calib_images": len(calib)},
        "reference": reference, "artifacts": [a.to_dict() for a in artifacts], "stages": stages.records,
        "sensitivity": report_sensitivity,
        "budget": {"int8_max_drop": plan.int8_max_drop, "fp16_max_drop": plan.fp16_max_drop}, "passed": passed,
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    from sa_deploy.report.render import write_report

    report["files"] = {k: str(v) for k, v in write_report(report, out).items()}
    return report


def _evaluate(art: Artifact, source, ref: Predictions, x1: np.ndarray, plan: RunPlan, sampled: bool = False) -> None:
    """validate.accuracy.evaluate_artifact (the one evaluation) with the plan's budget for the artifact's
    tolerance class (on a ``sampled`` subset: at least one image, ``subset_budget``) and latency."""
    planned = budget_for(art.precision, plan.budgets())
    budget = subset_budget(planned, len(source)) if sampled else planned
    iters = plan.latency_iters if art.format != "coreml" else max(1, plan.latency_iters // 10)
    ev = evaluate_artifact(art.path, source, ref, topk_accuracy(ref.logits, ref.labels, 1), budget, plan.threads,
                           runner_options=art.runner_options, name=art.name, precision=art.precision,
                           latency_input=x1, latency_iters=iters)
    res, p = ev.result, ev.result.parity
    if "int8" in res.details:
        art.metrics.update(int8=res.details["int8"], diagnosis=res.details.get("diagnosis"))
    art.metrics.update(top1=res.top1, top5=res.top5, drop=res.drop, max_drop=budget, images=res.num_images,
                       cosine=p.cosine, top1_agreement=p.top1_agreement, max_abs=p.max_abs, parity_passed=p.passed,
                       parity_reason=p.reason() or None, within_budget=res.within_budget, latency_ms=ev.latency_ms,
                       runner=ev.runner)
    if res.within_budget and res.drop is not None and res.drop > planned + 1e-9:  # passed only by the raised gate
        art.metrics["budget_note"] = f"budget {planned:g} is finer than 1 of {len(source)} images: gate {budget:.2f}"


def _mark(art: Artifact, rec: dict) -> Artifact:
    if rec["status"] != "ok":
        art.status, art.reason = "failed", rec.get("reason")
        if art.path is not None and art.path.exists():  # writes are atomic: what is there is not from this run
            art.reason = f"{art.reason}; {art.path.name} on disk is from an earlier run, not this one"
    return art


def _apply_budget(plan: RunPlan, artifacts: list[Artifact]) -> bool:
    """The accuracy-drop budgets (INT8, FP16) and parity within each precision's tolerance (validate.parity) decide
    the verdict; offenders are marked."""
    ok = True
    for art in artifacts:
        if art.status != "ok" or "top1" not in art.metrics:
            ok = False
        elif not art.metrics["within_budget"]:
            art.status = "over budget"
            art.reason = f"drop {art.metrics['drop']:.2f} > {art.metrics['max_drop']} points" + (
                f"; {art.metrics['diagnosis']}" if art.metrics.get("diagnosis") else "")
            ok = False
        elif not art.metrics["parity_passed"]:
            art.status, art.reason = "failed", f"parity vs PyTorch: {art.metrics['parity_reason']}"
            ok = False
    return ok


def _gateless_cpu_qdq(artifacts: list[Artifact]) -> Artifact | None:
    """The cpu-flavour Q/DQ artifact, written, when its model has no SA gate (nothing to keep float for OpenVINO)."""
    cpu_qdq = next((a for a in artifacts if a.name == "onnx-int8-cpu" and a.status == "ok"), None)
    if cpu_qdq is None or cpu_qdq.extra.get("quantize", {}).get("has_sa_gate", True):
        return None
    return cpu_qdq


def _build_artifacts(plan: RunPlan, model, calib, out: Path, stages: Stages, artifacts: list[Artifact]) -> None:
    """One loop over the run's typed artifact list (RunPlan.artifacts): each artifact is built by its runtime's
    manager (BackendManager.build) from the file of the artifact it comes from, or from the model. A runtime the
    plan turns off, or that this machine cannot run, is one skipped stage with the reason; an artifact whose source
    failed fails with that reason; an intermediate (``evaluate=False``) is built but not scored."""
    from sa_deploy.backends import get_backend
    from sa_deploy.rewrite.lowering import count_sa_layers

    for name in plan.disabled_runtimes():
        stages.skip(get_backend(name).stage_group or name, "disabled in the plan")
    context = BuildContext(model, calib, out / "calib_cache", calib_num=min(256, len(calib)) if calib else 0)
    built: dict[str, Artifact] = {}
    unavailable: dict[str, str | None] = {}
    for spec in plan.artifacts(model.deploy_config.name, has_sa_gate=bool(count_sa_layers(model))):
        backend = get_backend(spec.backend)
        if spec.backend not in unavailable:
            unavailable[spec.backend] = backend.is_available()
            if unavailable[spec.backend]:
                stages.skip(backend.stage_group or backend.name, unavailable[spec.backend])
        if unavailable[spec.backend]:
            continue
        source = built.get(spec.source) if spec.source else None
        art = Artifact(spec.name, spec.format, spec.precision, spec.path, spec.lowering,
                       spec.variant or (source.variant if source else None),  # e.g. an IR says what its Q/DQ was
                       runner_options=dict(spec.runner_options))
        with stages.stage(spec.stage or f"{backend.name}: {spec.name}") as rec:
            if spec.source and (source is None or source.status != "ok"):
                raise BudgetExceededError(f"not built: {spec.source}, which it is made from, failed")
            extra = backend.build(spec, source.path if source else None, context) or {}
            art.variant = extra.pop("variant", art.variant)
            art.extra.update(extra)
            if spec.options.get("parity"):  # an export of the model: checked against PyTorch before it counts
                _export_parity(model, art)
        if rec["status"] == "skipped":
            continue
        _mark(art, rec)
        built[spec.name] = art
        if spec.evaluate:
            artifacts.append(art)


def _export_parity(model, art: Artifact) -> None:
    """Parity of a fresh export vs PyTorch at batch 1 and 3 (ParityError, and the file removed, when it fails)."""
    stats = api.onnx_parity(model, art.path, model.deploy_config.preprocess.input_size)
    art.extra["export_parity"] = [s.to_dict() for s in stats]
    try:
        api.require_parity(stats, art.path)
    except BudgetExceededError:
        art.path.unlink(missing_ok=True)  # this run just wrote it: a file that fails parity is not left behind
        raise


def _tensorrt_lint_stage(artifacts: list[Artifact], stages: Stages) -> None:
    """The offline TensorRT lint of every ONNX artifact (no TensorRT needed)."""
    onnx_arts = [a for a in artifacts if a.format == "onnx" and a.status == "ok"]
    with stages.stage("TensorRT offline lint") as rec:
        results = {}
        for art in onnx_arts:
            rep = api.lint_onnx(art.path)
            art.extra["tensorrt_lint"] = "pass" if rep.passed else "fail"
            results[art.name] = rep.passed
        failing = [n for n, ok in results.items() if not ok and "int8-cpu" not in n]
        rec["reason"] = (f"{sum(results.values())}/{len(results)} pass (the cpu INT8 flavour uses uint8 "
                         "activations, which TensorRT does not take)" + (f"; FAIL: {failing}" if failing else ""))
