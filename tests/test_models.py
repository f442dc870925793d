import pytest
import torch

from advlab import models


@pytest.mark.parametrize("arch,dataset,shape", [("mlp", "fashion_mnist", (1, 28, 28)),
                                                ("mlp", "synthetic-cifar10", (3, 32, 32)),
                                                ("cnn", "fashion_mnist", (1, 28, 28)),
                                                ("vgg", "fashion_mnist", (1, 28, 28)),
                                                ("resnet18", "synthetic-cifar10", (3, 32, 32)),
                                                ("wrn", "synthetic-cifar10", (3, 32, 32))])
def test_models_build_and_map_images_to_logits(arch, dataset, shape):
    m = models.build(arch, dataset).eval()
    with torch.no_grad():
        out = m(torch.rand(2, *shape))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_parameter_counts():
    assert 1.0e6 < models.num_params(models.build("cnn")) < 1.5e6
    assert 10e6 < models.num_params(models.build("resnet18", "synthetic-cifar10")) < 12e6
    assert 35e6 < models.num_params(models.build("wrn", "synthetic-cifar10")) < 38e6  # WRN-28-10


def test_normalisation_lives_inside_the_model():
    m = models.build("cnn")
    assert isinstance(m.norm, models.Normalize)
    x = torch.full((1, 1, 2, 2), 0.2860)
    assert torch.allclose(m.norm(x), torch.zeros_like(x), atol=1e-6)


def test_unknown_architecture_and_bad_depth():
    with pytest.raises(ValueError, match="^arch:"):
        models.build("transformer")
    with pytest.raises(ValueError, match="^depth:"):
        models.WideResNet(depth=27)
