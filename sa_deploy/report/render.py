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
        status = a["status"] + (f" ({'; '.join(notes)})" if notes else "")
        rows.append([a["format"] + (f" {a['lowering']}" if a.get("lowering") else ""),
                     a.get("variant") or a["precision"], _fmt(a.get("size_mb"), ".2f"), _fmt(a.get("top1"), ".2f"),
                     _fmt(a.get("drop"), ".2f"), parity, _fmt(a.get("latency_ms"), ".2f"), status])
    return rows


def _data_line(data: dict) -> str:
    """E.g. 'embedded sample: 1000 validation / 512 calibration images (...)' or the folders the images came from."""
    if data.get("embedded"):
        return f"{data['source']} ({data.get('origin')}; sa_deploy/data/embedded/cifar10_sample.card.json)"
    return (f"validation: {data.get('val_images')} images from `{data.get('val')}`; "
            f"calibration: {data.get('calib_images')} images from `{data.get('calib')}`")


def markdown(report: dict, chart_files: dict[str, str]) -> str:
    m = report["model"]
    lines = [f"# sa-deploy report: {m['name']}", "",
             f"- checkpoint: `{m.get('checkpoint')}` (sha256 {str(m.get('checkpoint_sha256'))[:16]}...)",
             f"- data: {_data_line(report['data'])}",
             f"- budget: INT8 drop <= {report['budget']['int8_max_drop']} points, FP16 drop <= "
             f"{report['budget']['fp16_max_drop']} points -> **{'PASS' if report['passed'] else 'FAIL'}**",
             f"- machine: {report['machine'].get('summary')}; total {report.get('seconds', 0):.0f} s", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r) + " |" for r in summary_rows(report)]
    lines += ["", "drop = PyTorch FP32 top-1 minus the artifact's top-1 on the same images (points; negative = "
              "better); parity = mean cosine of the logits vs PyTorch. CoreML off macOS runs in sa-deploy's numpy "
              "reference MIL executor on a stratified subset of the validation images (see report.json `images`).",
              "", "## Stages", "",
              "| stage | status | seconds | note |", "|---|---|---|---|"]
    for s in report.get("stages", []):
        lines.append(f"| {s['name']} | {s['status']} | {s.get('seconds', 0):.1f} | {s.get('reason') or ''} |")
    if report.get("sensitivity"):
        lines += ["", "## INT8 sensitivity (10 nodes losing the most SQNR)", "",
                  "| node | op | SQNR loss dB | SQNR vs FP32 dB |", "|---|---|---|---|"]
        lines += [f"| {r['node'] or r['tensor']} | {r['op_type']} | {r['sqnr_loss_db']:.1f} | {r['sqnr_db']:.1f} |"
                  for r in sorted(report["sensitivity"], key=lambda r: -r["sqnr_loss_db"])[:10]]
    if chart_files:
        lines += ["", "## Charts", ""] + [f"![{k}]({v})" for k, v in chart_files.items()]
    return "\n".join(lines) + "\n"


def html_page(report: dict, charts: dict[str, bytes], md_text: str) -> str:
    rows = summary_rows(report)
    table = "<table><tr>" + "".join(f"<th>{c}</th>" for c in COLUMNS) + "</tr>" + "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>"
    stages = "<table><tr><th>stage</th><th>status</th><th>seconds</th><th>note</th></tr>" + "".join(
        f"<tr><td>{html.escape(s['name'])}</td><td>{s['status']}</td><td>{s.get('seconds', 0):.1f}</td>"
        f"<td>{html.escape(s.get('reason') or '')}</td></tr>" for s in report.get("stages", [])) + "</table>"
    imgs = "".join(f"<h3>{k}</h3><img alt='{k}' src='data:image/png;base64,{base64.b64encode(v).decode()}'/>"
                   for k, v in charts.items())
    verdict = "PASS" if report["passed"] else "FAIL"
    head = md_text.split("\n| format")[0].split("\n", 2)[-1]
    bullets = "".join(f"<li>{html.escape(line[2:])}</li>" for line in head.splitlines() if line.startswith("- "))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>sa-deploy report: {html.escape(
        report['model']['name'])}</title><style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
th{{background:#eee}}.PASS{{color:green}}.FAIL{{color:#c00}}img{{max-width:100%}}</style></head><body>
<h1>sa-deploy report: {html.escape(report['model']['name'])} <span class="{verdict}">{verdict}</span></h1>
<ul>{bullets}</ul><h2>Artifacts</h2>{table}<h2>Stages</h2>{stages}<h2>Charts</h2>{imgs}
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
    md_text = markdown(report, chart_files)
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
