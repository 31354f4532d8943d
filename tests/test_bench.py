"""The benchmark runs end to end on a tiny configuration and writes a well-formed table (no timing asserts)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

from sa_deploy.cli import main
from sa_deploy.report.bench import COLUMNS

VARIANTS = ["floor", "naive", "fold", "int8-cpu"]
RUNTIMES = ["onnxruntime", "openvino"]


def _table_rows(md: str) -> list[list[str]]:
    lines = [ln for ln in md.splitlines() if ln.startswith("| model | runtime | variant |")]
    assert len(lines) == 1, "one results table"
    start = md.splitlines().index(lines[0])
    rows = []
    for ln in md.splitlines()[start:]:
        if not ln.startswith("|"):
            break
        rows.append([c.strip() for c in ln.strip("|").split("|")])
    return rows


def _check_table(md: str, variants: list[str], batches: list[int], runtimes: list[str]) -> None:
    header, sep, *body = _table_rows(md)
    assert header == list(COLUMNS)
    assert len(sep) == len(COLUMNS) and len(body) == len(variants) * len(batches) * len(runtimes)
    assert {r[COLUMNS.index("runtime")] for r in body} == set(runtimes)
    for row in body:
        assert len(row) == len(COLUMNS)
        assert float(row[COLUMNS.index("median ms")]) > 0 and int(row[COLUMNS.index("nodes")]) > 0
    floor = [r for r in body if r[COLUMNS.index("variant")] == "floor"]
    # each runtime's floor is its own reference
    assert len(floor) == len(batches) * len(runtimes) and all(r[COLUMNS.index("vs floor")] == "1.000x" for r in floor)
    assert "| fold / floor |" in md  # the key-ratio table
    if len(runtimes) > 1:
        assert "| fold / onnxruntime fold |" in md  # cross-runtime ratios from the same run


@pytest.fixture(scope="module")
def script_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    cmd = [sys.executable, str(ROOT / "scripts" / "bench.py"), "--models", "sa_resnet_cifar", "--variants",
           *VARIANTS, "--batch", "1", "2", "--rounds", "1", "--iters", "1", "--out", str(out), "--runtimes",
           *RUNTIMES]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def test_bench_script_tiny(script_out):
    out = script_out
    md = (out / "RESULTS.md").read_text()
    _check_table(md, VARIANTS, [1, 2], RUNTIMES)
    assert "scripts/bench.py" in md and "onnxruntime" in md and "cpu" in md
    assert (out / "latency.png").read_bytes()[:4] == b"\x89PNG"
    data = json.loads((out / "results.json").read_text())
    assert {(r["variant"], r["runtime"]) for r in data["rows"]} == {(v, rt) for v in VARIANTS for rt in RUNTIMES}
    assert sorted((out / "artifacts").glob("*.onnx"))  # reusable artifacts


def test_bench_command_on_given_files(script_out, tmp_path, capsys):
    files = [script_out / "artifacts" / f"sa_resnet_cifar_{v}.onnx" for v in ("floor", "fold")]
    out = tmp_path / "r"
    assert main(["bench", *map(str, files), "--batch", "1", "--rounds", "2", "--iters", "1", "--out", str(out),
                 "--runtimes", "onnxruntime"]) == 0
    assert "CPU latency" in capsys.readouterr().out
    _check_table((out / "RESULTS.md").read_text(), ["floor", "fold"], [1], ["onnxruntime"])


def test_bench_command_user_errors(tmp_path, capsys):
    assert main(["bench", str(tmp_path / "missing.onnx")]) != 0
    assert main(["bench", str(tmp_path / "missing.onnx"), "--rounds", "0"]) != 0
    assert main(["bench", str(tmp_path / "missing.onnx"), "--runtimes", "tflite"]) != 0
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err
