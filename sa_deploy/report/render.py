"""Report files: report.json (every number), report.md, and a self-contained report.html (PNG charts inlined)."""
from __future__ import annotations

import base64
import html
import json
import math
import numbers
import re
from pathlib import Path
from typing import Any

from sa_deploy.report.plots import all_charts
from sa_deploy.util.atomic import head_bytes, png_software, write_bytes_atomic

COLUMNS = ("format", "precision", "size MB", "top-1", "drop", "parity", "latency ms", "status")
_ALIGN = {c: "---:|" for c in ("size MB", "top-1", "drop", "parity", "latency ms")}  # numbers right-aligned


_JSON_SIGNATURE = re.compile(rb'\A\{\s*"sa_deploy_version"')
_TEXT_SIGNATURES = {".md": (b"# sa-deploy ",), ".html": (b'<!doctype html><html><head><meta charset="utf-8"><title>'
                                                       b"sa-deploy ",)}


def owned_report_file(path: Path) -> bool:
    """Whether an existing report file is one sa-deploy wrote (and may overwrite), by its signature: a JSON object
    whose first key is ``sa_deploy_version``, Markdown / HTML starting with sa-deploy's title, a PNG whose
    ``Software`` chunk names sa-deploy. Charts (and bench results.json) written before they carried one count when
    they are matplotlib PNGs / bench JSON beside an sa-deploy report.md or RESULTS.md."""
    path = Path(path)
    head = head_bytes(path)
    if path.suffix == ".json":
        if _JSON_SIGNATURE.match(head):
            return True
        return head.startswith(b'{\n "machine"') and _sibling_report(path)
    if path.suffix in _TEXT_SIGNATURES:
        return head.startswith(_TEXT_SIGNATURES[path.suffix])
    if path.suffix == ".png":
        software = png_software(path) or ""
        return software.startswith("sa-deploy") or (software.startswith("Matplotlib") and _sibling_report(path))
    return False


def _sibling_report(path: Path) -> bool:
    return any(head_bytes(path.with_name(n)).startswith(b"# sa-deploy ") for n in ("report.md", "RESULTS.md"))


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def summary_rows(report: dict) -> list[list[str]]:
    """The console/markdown summary: format | precision | size MB | top-1 | drop | parity | latency ms | status."""
    rows = []
    ref = report.get("reference") or {}
    if ref.get("top1") is not None:
        rows.append(["pytorch", "fp32", _fmt(ref.get("size_mb"), ".2f"), _fmt(ref["top1"], ".2f"), "0.00",
                     "reference", _fmt(ref.get("latency_ms"), ".2f"), "ok"])
    for a in report.get("artifacts", []):
        parity = "-" if a.get("cosine") is None else f"cos {a['cosine']:.5f}"
        notes = [a["reason"]] if a.get("reason") else []
        if a.get("images") and a["images"] != ref.get("images"):
            notes.append(f"{a['images']} images, {a.get('runner', '')}".rstrip(", "))
        if a.get("budget_note"):
            notes.append(a["budget_note"])
        if a.get("diagnosis") and a["diagnosis"] not in (a.get("reason") or ""):
            notes.append(a["diagnosis"])
        status = a["status"] + (f" ({'; '.join(notes)})" if notes else "")
        rows.append([a["format"] + (f" {a['lowering']}" if a.get("lowering") else ""),
                     a.get("variant") or a["precision"], _fmt(a.get("size_mb"), ".2f"), _fmt(a.get("top1"), ".2f"),
                     _fmt(a.get("drop"), ".2f"), parity, _fmt(a.get("latency_ms"), ".2f"), status])
    return rows


_MD_SPECIAL = re.compile(r"([\\`*\[\]<>|~&])|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def md_escape(value: Any) -> str:
    """``value`` as literal Markdown text on one line: every character that could start markup (emphasis, code,
    links, autolinks, raw HTML, entities, table cells) is backslash-escaped, so that text sa-deploy does not control
    (paths, file names, error messages) renders as itself."""
    return _MD_SPECIAL.sub(lambda m: "\\" + m.group(0), " ".join(str(value).split()))


def md_code(value: Any) -> str:
    """``value`` as a Markdown code span (CommonMark: a backtick fence longer than any backtick run inside it),
    on one line, with ``|`` escaped so that it can sit in a table cell."""
    text = " ".join(str(value).split()).replace("|", "\\|")
    fence = "`" * (max((len(r) for r in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def display_path(path: str | Path | None, out_dir: str | Path | None = None) -> str:
    """How a report names a file the user gave: relative to the run folder when it lies inside it, else its file
    name (the report carries its SHA-256; the absolute path stays in report.json)."""
    if not path:
        return "none"
    p = Path(path)
    if out_dir is not None:
        try:
            return p.resolve().relative_to(Path(out_dir).resolve()).as_posix()
        except (ValueError, OSError):
            pass
    return p.name


def _checkpoint_line(model: dict, out_dir: str | Path | None) -> str:
    """E.g. '`ck.pth` (sha256 `9f86...`)', or the embedded weights of sa-deploy by name."""
    ckpt = model.get("checkpoint")
    sha = model.get("checkpoint_sha256")
    if not ckpt:
        return "none" + (f" (weights sha256 {md_code(sha)})" if sha else "")
    embedded = Path(ckpt).parent.name == "weights" and Path(ckpt).parent.parent.name == "sa_deploy"
    where = " (embedded in sa-deploy)" if embedded else ""
    return f"{md_code(display_path(ckpt, out_dir))}{where}" + (f", sha256 {md_code(sha)}" if sha else "")


def _data_line(data: dict) -> str:
    """E.g. 'embedded sample: 1000 validation / 512 calibration images (...)' or the folders the images came from."""
    if data.get("embedded"):
        return (f"{md_escape(data['source'])} ({md_escape(data.get('origin'))}; "
                f"{md_code('sa_deploy/data/embedded/cifar10_sample.card.json')})")
    return (f"validation: {data.get('val_images')} images from {md_code(data.get('val'))}; "
            f"calibration: {data.get('calib_images')} images from {md_code(data.get('calib'))}")


def markdown(report: dict, chart_files: dict[str, str], out_dir: str | Path | None = None) -> str:
    """report.md; ``out_dir``: the run folder (file paths are written relative to it)."""
    m = report["model"]
    lines = [f"# sa-deploy report: {md_escape(m['name'])}", "",
             f"- checkpoint: {_checkpoint_line(m, out_dir)}",
             f"- data: {_data_line(report['data'])}",
             f"- budget: INT8 drop <= {report['budget']['int8_max_drop']} points, FP16 drop <= "
             f"{report['budget']['fp16_max_drop']} points -> **{'PASS' if report['passed'] else 'FAIL'}**",
             f"- machine: {md_escape(report['machine'].get('summary'))}; total {report.get('seconds', 0):.0f} s",
             f"- int8 kernels here: {md_escape(report['machine'].get('int8_kernels', 'unknown'))}", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "".join(_ALIGN.get(c, "---|") for c in COLUMNS)]
    lines += ["| " + " | ".join(md_escape(c) for c in r) + " |" for r in summary_rows(report)]
    lines += ["", "drop = PyTorch FP32 top-1 minus the artifact's top-1 on the same images (points; negative = "
              "better); parity = mean cosine of the logits vs PyTorch. CoreML off macOS runs in sa-deploy's numpy "
              "reference MIL executor on a stratified subset of the validation images (see report.json `images`).",
              "", "## Stages", "",
              "| stage | status | seconds | note |", "|---|---|---:|---|"]
    for s in report.get("stages", []):
        lines.append(f"| {md_escape(s['name'])} | {md_escape(s['status'])} | {s.get('seconds', 0):.1f} | "
                     f"{md_escape(s.get('reason') or '')} |")
    lines += int8_section(report)
    if report.get("sensitivity"):
        lines += ["", "## INT8 sensitivity (10 nodes losing the most SQNR)", "",
                  "| node | op | SQNR loss dB | SQNR vs FP32 dB |", "|---|---|---:|---:|"]
        lines += [f"| {md_code(r['node'] or r['tensor'])} | {md_escape(r['op_type'])} | {r['sqnr_loss_db']:.1f} | "
                  f"{r['sqnr_db']:.1f} |"
                  for r in sorted(report["sensitivity"], key=lambda r: -r["sqnr_loss_db"])[:10]]
    if chart_files:
        lines += ["", "## Charts", ""] + [f"![{k}]({v})" for k, v in chart_files.items()]
    return "\n".join(lines) + "\n"


def int8_section(report: dict) -> list[str]:
    """Markdown lines: each INT8 artifact's two scores (this CPU's kernels, the int32 Q/DQ emulation), which one
    judged it, the kernel path and the diagnosis (validate.int8_numerics)."""
    rows = [a for a in report.get("artifacts", []) if isinstance(a.get("int8"), dict) and "kernel_drop" in a["int8"]]
    if not rows:
        return []
    lines = ["", "## INT8: kernels vs emulation", "",
             "Each INT8 file is judged by its target's numerics: a tensorrt-flavour file by the int32 Q/DQ emulation "
             "(what TensorRT computes), a cpu-flavour file and an OpenVINO IR by this CPU's int8 kernels. Both drops "
             "are shown; a gap beyond noise is diagnosed.", "",
             "| artifact | judged by | kernels | drop, kernels | drop, emulated | diagnosis |",
             "|---|---|---|---:|---:|---|"]
    for a in rows:
        n = a["int8"]
        path = n.get("path") if n["judged_by"] == "kernels" else n.get("twin_path")
        kernels = f"{path['runtime']}: {path['instructions']} -> {path['accumulation']}" if path else "-"
        lines.append(f"| {md_escape(a['name'])} | {md_escape(n['judged_by'])} | {md_escape(kernels)} | "
                     f"{_fmt(n.get('kernel_drop'), '+.2f')} | {_fmt(n.get('emulated_drop'), '+.2f')} | "
                     f"{md_escape(n.get('diagnosis') or '-')} |")
    return lines


def html_page(report: dict, charts: dict[str, bytes], md_text: str) -> str:
    """report.html: report.md rendered (CommonMark + tables, raw HTML off: anything in it shows as text), with the
    charts inlined as PNGs so that the page stands alone."""
    from markdown_it import MarkdownIt

    body = md_text.split("\n", 1)[1] if md_text.startswith("# ") else md_text
    body = body.split("\n## Charts\n")[0]
    rendered = MarkdownIt("commonmark", {"html": False}).enable("table").render(body)
    verdict = "PASS" if report["passed"] else "FAIL"
    rendered = rendered.replace(f"<strong>{verdict}</strong>", f'<strong class="{verdict}">{verdict}</strong>', 1)
    imgs = "".join(f"<h3>{html.escape(k)}</h3><img alt=\"{html.escape(k)}\" "
                   f"src=\"data:image/png;base64,{base64.b64encode(v).decode()}\"/>" for k, v in charts.items())
    charts_html = f"<h2>Charts</h2>{imgs}" if imgs else ""
    name = html.escape(str(report["model"]["name"]))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>sa-deploy report: {name}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}
th{{background:#eee}}code{{background:#f3f3f3;padding:0 3px;border-radius:3px;overflow-wrap:anywhere}}
.PASS{{color:green}}.FAIL{{color:#c00}}img{{max-width:100%}}</style></head><body>
<h1>sa-deploy report: {name} <span class="{verdict}">{verdict}</span></h1>
{rendered}{charts_html}
<p>Every number is in report.json.</p></body></html>"""


def write_report(report: dict, out_dir: str | Path) -> dict[str, Path]:
    """Writes report.json, report.md (+ PNG charts beside it) and report.html; returns their paths."""
    out = Path(out_dir)
    charts = all_charts(report)
    chart_files = {}
    for name, png in charts.items():
        write_bytes_atomic(out / f"chart_{name}.png", png, owned=owned_report_file)
        chart_files[name] = f"chart_{name}.png"
    paths = {"json": out / "report.json", "md": out / "report.md", "html": out / "report.html"}
    write_json(paths["json"], report)
    md_text = markdown(report, chart_files, out)
    write_bytes_atomic(paths["md"], md_text.encode(), owned=owned_report_file)
    write_bytes_atomic(paths["html"], html_page(report, charts, md_text).encode(), owned=owned_report_file)
    return paths


def report_paths(out_dir: str | Path) -> list[Path]:
    """Every file write_report may write into ``out_dir`` (for checks before a run starts)."""
    from sa_deploy.report.plots import CHART_NAMES

    out = Path(out_dir)
    return [out / "report.json", out / "report.md", out / "report.html"] + [out / f"chart_{n}.png"
                                                                           for n in CHART_NAMES]


def write_json(path: str | Path, payload: dict) -> Path:
    """A machine-readable report (validation, quantization...) written atomically; its first key,
    ``sa_deploy_version``, is the signature that lets a later write replace it."""
    from sa_deploy import __version__

    stamped = _finite({"sa_deploy_version": __version__, **payload})
    data = json.dumps(stamped, indent=2, default=str, allow_nan=False).encode()
    return write_bytes_atomic(path, data, owned=owned_report_file)


def _finite(value: Any) -> Any:
    """NaN / Inf (a non-finite parity number, say) as null: JSON has no NaN, and strict readers reject one."""
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):  # numpy floats too
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
