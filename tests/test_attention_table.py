"""scripts/attention_table.py, which writes docs/attention.md's tables: one short run on two of the small variants
fills every column from real measurements, and a rerun replaces only its own size's block of the page."""
from __future__ import annotations

import importlib.util
import json

import pytest
from helpers import ROOT


@pytest.fixture(scope="module")
def table_script():
    spec = importlib.util.spec_from_file_location("attention_table", ROOT / "scripts" / "attention_table.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_short_run_fills_every_column(table_script, tmp_path, monkeypatch):
    # SA and ECA: both have embedded weights, and ECA's naive export keeps a Shape op its deploy form does not
    monkeypatch.setattr(table_script, "MODULES", {k: table_script.MODULES[k] for k in ("sa", "eca")})
    doc = tmp_path / "attention.md"
    doc.write_text("# page\n\nhand-written text\n")
    assert table_script.main(["--sizes", "32", "--batch", "1", "--rounds", "1", "--iters", "2", "--no-coreml",
                              "--doc", str(doc), "--work", str(tmp_path / "work")]) == 0

    rows = json.loads((tmp_path / "work" / "attention.json").read_text())["results"]["32"]["rows"]
    assert set(rows) == {"sa", "eca"}
    sa, eca = rows["sa"], rows["eca"]
    assert sa["top1"] == pytest.approx(86.46, abs=0.01)  # from the embedded card
    assert eca["params"] == 39 and sa["params"] == 504  # over the attention-free floor
    assert (eca["naive"]["nodes_max"], eca["deploy"]["nodes_max"]) == (10, 6)
    assert eca["naive"]["shape_ops"] > 0 and eca["deploy"]["shape_ops"] == 0
    assert sa["naive"]["max_rank"] == 5 and sa["deploy"]["max_rank"] == 4
    for row in rows.values():
        assert row["deploy"]["lint"] == "pass"
        assert set(row["int8_drop"]) == {"tensorrt", "cpu"}
        assert all(abs(d) < 5 for d in row["int8_drop"].values())  # trained weights: a small drop, in points
        assert {f"{rt} b1 {form}" for rt in ("onnxruntime", "openvino") for form in ("naive", "deploy")} \
            <= set(row["latency"])

    page = doc.read_text()
    assert page.startswith("# page\n\nhand-written text\n")
    block = page[page.index("<!-- attention-table 32 begin -->"):page.index("<!-- attention-table 32 end -->")]
    assert "| SA | `sa_resnet_cifar` |" in block and "| ECA | `eca_resnet_cifar` |" in block
    assert "86.46" in block and "1 rounds x 2 calls" in block


def test_rerun_replaces_only_its_block(table_script, tmp_path):
    doc = tmp_path / "attention.md"
    table_script.write_block(doc, 224, "old 224")
    table_script.write_block(doc, 32, "old 32")
    text = doc.read_text().replace("# The attention family, deployed\n", "# title\n\nintro\n")
    doc.write_text(text + "\nfooter\n")
    table_script.write_block(doc, 32, "new 32")
    page = doc.read_text()
    assert "new 32" in page and "old 32" not in page
    assert "old 224" in page and page.startswith("# title\n\nintro\n") and page.endswith("footer\n")
