"""`sa-deploy --help`, every sub-command's `--help` and usage errors import none of the heavy stack (issue 26, item
4): they print text, so they must not pay for torch, onnx, onnxruntime, coremltools or openvino. Checked on the
modules imported, in a fresh interpreter (not on time)."""
from __future__ import annotations

import json
import subprocess
import sys

from sa_deploy.cli import COMMANDS, build_parser

HEAVY = ("torch", "onnx", "onnxruntime", "onnxsim", "onnxconverter_common", "coremltools", "openvino", "tensorrt",
         "numpy", "matplotlib", "PIL")


def _subcommands() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sorted(sub.choices)


def _imported_after(argvs: list[list[str]]) -> dict:
    """Run the CLI on each argv in turn in one fresh interpreter (SystemExit caught) -> {"codes": exit statuses,
    "loaded": the heavy modules loaded so far, after each argv}."""
    code = f"""
import contextlib, io, json, sys
from sa_deploy.cli import main
codes, loaded = [], []
for argv in {argvs!r}:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            codes.append(main(argv))
        except SystemExit as exc:
            codes.append(exc.code)
    loaded.append([m for m in {HEAVY!r} if m in sys.modules])
print(json.dumps({{"codes": codes, "loaded": loaded}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_command_is_registered():
    assert len(_subcommands()) >= len(COMMANDS)  # fp16 is registered by cmd_quantize
    assert {"export", "inspect", "quantize", "fp16", "convert", "validate", "run", "lint", "build", "bench"} <= set(
        _subcommands())


def test_help_imports_no_heavy_module():
    argvs = [["--help"], ["--version"], []] + [[c, "--help"] for c in _subcommands()]
    result = _imported_after(argvs)
    assert result["loaded"][-1] == [], {" ".join(a): m for a, m in zip(argvs, result["loaded"]) if m}
    assert result["codes"] == [0, 0, 2] + [0] * (len(argvs) - 3), result["codes"]


USAGE_ERRORS = [
    ["export", "--lowering", "bogus"],
    ["export", "--model"],
    ["quantize", "m.onnx", "--num", "0"],
    ["quantize", "m.onnx", "--out", "q.txt"],
    ["fp16", "m.onnx", "--std", "0", "1", "1"],
    ["run", "--out", "out/report.json"],
    ["bench", "m.onnx", "--batch", "0"],
    ["build", "m.onnx"],
    ["inspect"],
    ["validate", "--max-drop", "nan"],
    ["no-such-command"],
]


def test_usage_errors_import_no_heavy_module():
    result = _imported_after(USAGE_ERRORS)
    assert result["loaded"][-1] == [], {" ".join(a): m for a, m in zip(USAGE_ERRORS, result["loaded"]) if m}
    assert result["codes"] == [2] * len(USAGE_ERRORS), list(zip(USAGE_ERRORS, result["codes"]))


def test_cli_constants_mirror_the_models_package():
    """cli.common keeps copies of the preprocessing bounds (importing sa_deploy.models imports torch)."""
    from sa_deploy.cli import common
    from sa_deploy.models import preprocessing

    assert common.INTERPOLATIONS == preprocessing.INTERPOLATIONS
    assert (common.MIN_INPUT_SIZE, common.MAX_INPUT_SIZE) == (preprocessing.MIN_INPUT_SIZE,
                                                              preprocessing.MAX_INPUT_SIZE)
