"""coremltools' own noise stays off the console (issue 26, item 8): off macOS it logs "Failed to load
_MLModelProxy: No module named 'coremltools.libcoremlpython'" for each proxy class, and it warns that the installed
torch "has not been tested with coremltools"; sa-deploy drops exactly these messages and keeps every other one."""
from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

pytest.importorskip("coremltools")

NOISE = ("libcoremlpython", "Failed to load _ML", "has not been tested with coremltools")


def test_export_to_coreml_prints_no_coremltools_noise(tmp_path):
    """A fresh process (the messages come when coremltools is first imported): `sa-deploy export --format coreml`
    and then `sa-deploy inspect` of the package, both through the CLI."""
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    export = subprocess.run([sys.executable, "-m", "sa_deploy", "export", "--model", "sa_resnet_cifar", "--format",
                             "coreml", "--precision", "fp16", "--out", str(tmp_path)],
                            capture_output=True, text=True, env=env, timeout=600)
    said = export.stdout + export.stderr
    assert export.returncode == 0, said
    assert (tmp_path / "sa_resnet_cifar_fold_fp16.mlpackage").is_dir()
    assert "parity vs PyTorch (coreml" in said  # it did convert and run the package
    assert not [line for line in said.splitlines() if any(n in line for n in NOISE)], said


def test_only_the_known_messages_are_dropped(caplog):
    import sa_deploy.backends.coreml  # noqa: F401  (installs the filter)

    logger = logging.getLogger("coremltools")
    with caplog.at_level(logging.WARNING, logger="coremltools"):
        logger.warning("Failed to load _MLModelProxy: No module named 'coremltools.libcoremlpython'")
        logger.warning("Failed to load _MLComputePlanProxy: No module named 'coremltools.libcoremlpython'")
        logger.warning("Torch version 2.13.0+cpu has not been tested with coremltools. You may run into unexpected "
                       "errors. Torch 2.7.0 is the most recent version that has been tested.")
        # real warnings, and the same words about something else, stay visible
        logger.warning("Failed to load _MLModelProxy: libcoremlpython.so: undefined symbol: foo")
        logger.warning("scikit-learn version 9.0 has not been tested with coremltools. You may run into errors.")
        logger.warning("Tuple detected at graph output. This will be flattened in the converted model.")
    assert [r.getMessage()[:40] for r in caplog.records] == [
        "Failed to load _MLModelProxy: libcoremlp", "scikit-learn version 9.0 has not been te",
        "Tuple detected at graph output. This wil"]
