import pickle

import pytest
import torch
import torchvision
from conftest import RESNET18, needs_resnet18
from torch.nn import functional as F

from textvision.core.backbones import REGISTRY
from textvision.core.errors import InputError
from textvision.models.network import InputAdapter, TextVisionNet, build_backbone, build_head


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_backbone_gives_its_map_count(name):
    backbone = build_backbone(name, "none")
    maps = backbone(torch.zeros(2, 3, 150, 150))
    assert maps.shape[1] == REGISTRY[name].channels == backbone.channels
    assert not any(p.requires_grad for p in backbone.parameters())


def _bn(x, sd, prefix):
    return F.batch_norm(
        x,
        sd[f"{prefix}.running_mean"],
        sd[f"{prefix}.running_var"],
        sd[f"{prefix}.weight"],
        sd[f"{prefix}.bias"],
        False,
        0.0,
        1e-5,
    )


def _basic_block(x, sd, prefix, stride=1, downsample=False):
    out = F.relu(
        _bn(
            F.conv2d(x, sd[f"{prefix}.conv1.weight"], stride=stride, padding=1), sd, f"{prefix}.bn1"
        )
    )
    out = _bn(F.conv2d(out, sd[f"{prefix}.conv2.weight"], padding=1), sd, f"{prefix}.bn2")
    if downsample:
        x = _bn(
            F.conv2d(x, sd[f"{prefix}.downsample.0.weight"], stride=stride),
            sd,
            f"{prefix}.downsample.1",
        )
    return F.relu(out + x)


@needs_resnet18
def test_shared_resnet18_reproduces_the_convolutions_by_hand():
    sd = torch.load(RESNET18, weights_only=True)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    hand = F.max_pool2d(
        F.relu(_bn(F.conv2d(x, sd["conv1.weight"], stride=2, padding=3), sd, "bn1")), 3, 2, 1
    )
    hand = _basic_block(_basic_block(hand, sd, "layer1.0"), sd, "layer1.1")
    torch.testing.assert_close(build_backbone("resnet18@layer1", str(RESNET18))(x), hand)
    hand = _basic_block(_basic_block(hand, sd, "layer2.0", 2, True), sd, "layer2.1")
    torch.testing.assert_close(build_backbone("resnet18@layer2", str(RESNET18))(x), hand)
    full = torchvision.models.resnet18()
    full.load_state_dict(sd, strict=False)
    full.eval()
    with torch.no_grad():
        ref = full.layer3(
            full.layer2(full.layer1(full.maxpool(full.relu(full.bn1(full.conv1(x))))))
        )
    torch.testing.assert_close(build_backbone("resnet18@layer3", str(RESNET18))(x), ref)
    assert sd["conv1.weight"].std() > 0.03  # trained filters, not Kaiming init


@needs_resnet18
def test_frozen_slice_is_bit_identical_after_training():
    backbone = build_backbone("resnet18@layer2", str(RESNET18))
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    head, classifier = build_head("resnet18", backbone.channels, 2)
    net = TextVisionNet(InputAdapter(0.1, 0.2, upsample=3), backbone, head, classifier)
    optimizer = torch.optim.Adam([*net.head.parameters(), *net.classifier.parameters()], lr=1e-2)
    net.train()
    assert not backbone.body.training  # eval mode survives net.train()
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):  # one epoch of 4 batches
        loss = F.cross_entropy(
            net(torch.rand(8, 16, 16, generator=gen)), torch.randint(0, 2, (8,), generator=gen)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = backbone.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key  # weights and BatchNorm buffers alike


def test_weights_file_lacking_a_tensor_is_refused(tmp_path):
    sd = torchvision.models.resnet18().state_dict()
    partial = {k: v for k, v in sd.items() if not k.startswith("layer2.")}
    torch.save(partial, tmp_path / "partial.pt")
    build_backbone("resnet18@layer1", str(tmp_path / "partial.pt"))  # layer1 cut has all it needs
    with pytest.raises(
        InputError, match=r"partial.pt: lacks .* tensor\(s\) of the resnet18@layer2"
    ):
        build_backbone("resnet18@layer2", str(tmp_path / "partial.pt"))
    bad = dict(sd, **{"conv1.weight": torch.zeros(3, 3)})
    torch.save(bad, tmp_path / "shape.pt")
    with pytest.raises(InputError, match="conv1.weight.*shape"):
        build_backbone("resnet18", str(tmp_path / "shape.pt"))


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_object_is_refused_never_executed(tmp_path):
    marker = tmp_path / "executed"
    with open(tmp_path / "evil.pt", "wb") as fh:
        pickle.dump({"conv1.weight": _Exploit(str(marker))}, fh)
    with pytest.raises(InputError, match="evil.pt: not a loadable state_dict"):
        build_backbone("resnet18", str(tmp_path / "evil.pt"))
    assert not marker.exists()
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(InputError, match="expected a state_dict"):
        build_backbone("resnet18", str(tmp_path / "list.pt"))


def test_imagenet_weights_missing_offline_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        InputError, match=r"alexnet.*checkpoints/alexnet-owt-7be5be79\.pth.*prefetch"
    ):
        build_backbone("alexnet", "imagenet")
