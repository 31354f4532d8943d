from __future__ import annotations

import os

import pytest
import torch

from sa_deploy.errors import CheckpointError
from sa_deploy.models import create_model, read_checkpoint
from sa_deploy.models.random_weights import randomize


def _official(model: torch.nn.Module, path, prefix: str = "module.") -> None:
    """The official SA-Net training script's format (DataParallel keys, optimizer state)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    torch.save({"epoch": 90, "arch": "sa_resnet_cifar", "state_dict": {prefix + k: v for k, v in
                model.state_dict().items()}, "best_acc": torch.tensor(77.88), "optimizer": opt.state_dict()}, path)


def test_official_format_with_module_prefix(tmp_path):
    src = create_model("sa_resnet_cifar").train()
    _official(src, tmp_path / "ck.pth.tar")
    loaded = create_model("sa_resnet_cifar", checkpoint=tmp_path / "ck.pth.tar")
    for k, v in src.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    meta = loaded.deploy_config.checkpoint_meta
    assert meta["epoch"] == 90 and abs(meta["best_acc"] - 77.88) < 1e-4


def test_plain_state_dict(tmp_path):
    src = create_model("sa_mobilenetv2_cifar")
    torch.save(src.state_dict(), tmp_path / "plain.pth")
    state, meta = read_checkpoint(tmp_path / "plain.pth")
    assert meta == {} and set(state) == set(src.state_dict())


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/sa_deploy_pwned",))


def test_pickled_callable_is_refused(tmp_path):
    torch.save({"state_dict": {}, "payload": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="refusing to load"):
        create_model("sa_resnet_cifar", checkpoint=tmp_path / "evil.pth")
    assert not os.path.exists("/tmp/sa_deploy_pwned")


def test_other_architecture_gives_key_mismatch(tmp_path):
    torch.save(create_model("sa_mobilenetv2_cifar").state_dict(), tmp_path / "mbv2.pth")
    with pytest.raises(CheckpointError) as err:
        create_model("sa_resnet_cifar", checkpoint=tmp_path / "mbv2.pth")
    msg = str(err.value)
    assert "missing key(s)" in msg and "unexpected key(s)" in msg and "wrong architecture" in msg
    assert "\n" not in msg


def test_num_classes_mismatch_names_the_cause(tmp_path):
    torch.save(create_model("sa_resnet_cifar", num_classes=100).state_dict(), tmp_path / "c100.pth")
    with pytest.raises(CheckpointError, match="num_classes"):
        create_model("sa_resnet_cifar", checkpoint=tmp_path / "c100.pth")
    assert create_model("sa_resnet_cifar", checkpoint=tmp_path / "c100.pth", num_classes=100).fc.out_features == 100


def test_groups_mismatch_names_the_cause(tmp_path):
    torch.save(create_model("sa_resnet_cifar", sa_groups=4).state_dict(), tmp_path / "g4.pth")
    with pytest.raises(CheckpointError, match="SA groups"):
        create_model("sa_resnet_cifar", checkpoint=tmp_path / "g4.pth")


@pytest.mark.parametrize("name", ["se_resnet_cifar", "cbam_resnet_cifar", "eca_resnet_cifar", "gc_resnet_cifar"])
def test_attention_family_round_trip_strictly(tmp_path, name):
    src = randomize(create_model(name), seed=7).train()
    _official(src, tmp_path / "ck.pth.tar")
    loaded = create_model(name, checkpoint=tmp_path / "ck.pth.tar")
    for k, v in src.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    other = "se_resnet_cifar" if name == "gc_resnet_cifar" else "gc_resnet_cifar"
    torch.save(create_model(other).state_dict(), tmp_path / "other.pth")
    with pytest.raises(CheckpointError) as err:
        create_model(name, checkpoint=tmp_path / "other.pth")
    msg, attr, held = str(err.value), name.split("_")[0], other.split("_")[0]
    assert "missing key(s)" in msg and f"layer1.0.{attr}." in msg and "unexpected key(s)" in msg
    assert f"another attention module: the checkpoint holds {held} modules, the model {attr}" in msg


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        read_checkpoint(tmp_path / "junk.pth")
