"""report.md / report.html (issue 26, item 7): files named relative to the run folder (or by file name) with their
SHA-256, never by absolute path; the HTML renders the Markdown (code, bold, tables) instead of showing it, and
text sa-deploy does not control (paths, error messages) shows as itself in both."""
from __future__ import annotations

import re

from markdown_it import MarkdownIt

from sa_deploy.report.render import display_path, md_code, md_escape, write_report

SHA = "ab" * 32
HOSTILE = "ValueError: <script>alert(1)</script> | x **b** `t` [l](javascript:alert(1)) _e_ &amp;"


def _report(checkpoint: str, passed: bool = False) -> dict:
    return {
        "model": {"name": "sa_resnet_cifar", "checkpoint": checkpoint, "checkpoint_sha256": SHA},
        "data": {"source": "embedded sample: 40 validation / 16 calibration images", "embedded": True,
                 "origin": "no --data given, $SA_DEPLOY_DATA unset", "val_images": 40, "calib_images": 16},
        "budget": {"int8_max_drop": 1.0, "fp16_max_drop": 0.1}, "passed": passed,
        "machine": {"summary": "2 cores"}, "seconds": 3.0,
        "reference": {"top1": 90.0, "images": 40, "latency_ms": 1.0},
        "artifacts": [{"name": "onnx-fold-fp32", "format": "onnx", "lowering": "fold", "precision": "fp32",
                       "status": "failed", "reason": HOSTILE, "top1": None, "drop": None, "cosine": None,
                       "latency_ms": None, "size_mb": 1.3, "images": 40}],
        "stages": [{"name": "export ONNX (fold) + onnxsim", "status": "failed", "reason": HOSTILE, "seconds": 1.0}],
    }


def _html_text(page: str) -> str:
    return re.sub(r"<[^>]+>", "", page.split("<body>", 1)[1])


def test_checkpoint_is_named_by_file_name_and_sha256(tmp_path):
    ck = tmp_path / "elsewhere" / "deep" / "model_best.pth.tar"
    out = tmp_path / "run"
    out.mkdir()
    write_report(_report(str(ck)), out)
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    for text in (md, page):
        assert str(ck.parent) not in text and str(tmp_path) not in text
        assert "model_best.pth.tar" in text and SHA in text
    assert f"- checkpoint: `model_best.pth.tar`, sha256 `{SHA}`" in md


def test_checkpoint_inside_the_run_folder_is_relative(tmp_path):
    assert display_path(tmp_path / "run" / "weights" / "ck.pth", tmp_path / "run") == "weights/ck.pth"
    assert display_path(tmp_path / "ck.pth", tmp_path / "run") == "ck.pth"
    assert display_path(None, tmp_path) == "none"


def test_html_renders_the_markdown(tmp_path):
    write_report(_report(str(tmp_path / "ck.pth")), tmp_path)
    page = (tmp_path / "report.html").read_text()
    text = _html_text(page)
    assert "`" not in text.replace("`t`", "") and "**FAIL**" not in text  # no literal Markdown left
    assert '<strong class="FAIL">FAIL</strong>' in page and "<code>ck.pth</code>" in page
    assert page.count("<table>") == 2 and "<th>format</th>" in page and "<td>pytorch</td>" in page
    assert "no --data given, $SA_DEPLOY_DATA unset" in text and "shared/data" not in page


def test_user_text_shows_as_itself_and_cannot_inject(tmp_path):
    write_report(_report(str(tmp_path / "ck.pth")), tmp_path)
    md, page = (tmp_path / "report.md").read_text(), (tmp_path / "report.html").read_text()
    assert "<script>" not in page and "javascript:" not in re.findall(r'href="([^"]*)"', page + 'href=""')[0]
    assert "<a " not in page and "<em>" not in page
    assert HOSTILE in _html_text(page).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    # the pipe in the reason does not split its table cell, in the Markdown either
    tokens = MarkdownIt("commonmark").enable("table").parse(md)
    widths, n = [], 0
    for t in tokens:
        n = 0 if t.type == "tr_open" else n + (t.type in ("td_open", "th_open"))
        if t.type == "tr_close":
            widths.append(n)
    assert widths == [8, 8, 8, 4, 4], widths  # summary: header, pytorch, artifact; stages: header, stage


def test_md_helpers():
    assert md_escape("a_b _c_ *d* `e` <f> g|h") == "a_b \\_c\\_ \\*d\\* \\`e\\` \\<f\\> g\\|h"
    assert md_code("a`b") == "``a`b``" and md_code("`x`") == "`` `x` ``" and md_code("a|b") == "`a\\|b`"
    assert MarkdownIt().render(md_code("`x`")).strip() == "<p><code>`x`</code></p>"
