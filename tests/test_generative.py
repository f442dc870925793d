"""The WGAN-GP generator and critic (advlab.purifiers.defense_gan), its training loop (resumable,
seeded) and the zoo entry fmnist/wgan-gp with its `advlab train` hook."""
import pytest
import torch
import torch.nn as nn

from advlab import cli, zoo
from advlab.generative import Generator, gradient_penalty
from advlab.purifiers.defense_gan.model import Critic
from advlab.purifiers.defense_gan.train import WGANConfig, train_wgan_gp


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**kw):
    cfg = dict(dataset="synthetic", latent_dim=8, width=4, iters=4, batch_size=8, n_critic=2, n_train=64,
               log_every=2, ckpt_every=2, eval_n=4, eval_steps=2, eval_restarts=2, device="cpu")
    return WGANConfig(**(cfg | kw))


def test_generator_maps_latents_to_images_in_unit_range():
    G = Generator(latent_dim=16, width=8).eval()
    z = G.sample_latents(5, torch.Generator().manual_seed(0))
    assert z.shape == (5, 16) and abs(z.std().item() - 16 ** -0.5) < 0.1
    x = G(z * 50)                                        # large latents saturate, never leave [0, 1]
    assert x.shape == (5, 1, 28, 28) and x.min() >= 0 and x.max() <= 1
    assert Critic(width=8)(x).shape == (5,)


def test_generator_bad_arguments():
    with pytest.raises(ValueError, match="^latent_dim: "):
        Generator(latent_dim=0)
    with pytest.raises(ValueError, match="^width: "):
        Generator(width=2.5)
    with pytest.raises(ValueError, match="^z: "):
        Generator(latent_dim=16, width=4)(torch.zeros(2, 1, 16))
    with pytest.raises(ValueError, match="^iters: "):
        train_wgan_gp(tiny(iters=0), progress=False)


class LinearCritic(nn.Module):
    def __init__(self, norm):
        super().__init__()
        self.w = torch.full((784,), norm / 28.0)         # ||w||_2 = norm

    def forward(self, x):
        return x.flatten(1) @ self.w


@pytest.mark.parametrize("norm, penalty", [(1.0, 0.0), (2.0, 1.0), (3.0, 4.0)])
def test_gradient_penalty_of_a_linear_critic(norm, penalty):
    real, fake = torch.rand(6, 1, 28, 28), torch.rand(6, 1, 28, 28)
    assert gradient_penalty(LinearCritic(norm), real, fake) == pytest.approx(penalty, abs=1e-4)


def test_gradient_penalty_is_differentiable_for_the_critic():
    D = Critic(width=4)
    gp = gradient_penalty(D, torch.rand(4, 1, 28, 28), torch.rand(4, 1, 28, 28))
    gp.backward()  # every weight shapes the input gradient (the last bias does not)
    weights = [p for n, p in D.named_parameters() if n.endswith("weight")]
    assert len(weights) == 3 and all(p.grad is not None and p.grad.abs().max() > 0 for p in weights)


def test_training_runs_and_reports(tmp_path):
    G, D, m = train_wgan_gp(tiny(), progress=False)
    assert not G.training and not D.training and G.latent_dim == 8
    assert [h["iter"] for h in m["history"]] == [2, 4]
    for k in ("w_dist", "gp", "g_loss", "seconds"):
        assert k in m["history"][0]
    assert 0 < m["recon_mse"] < 1 and "L=2, R=2" in m["recon_setting"]
    G2, _, _ = train_wgan_gp(tiny(), progress=False)
    assert all(torch.equal(a, b) for a, b in zip(G.state_dict().values(), G2.state_dict().values()))  # seeded
    G3, _, _ = train_wgan_gp(tiny(seed=1), progress=False)
    assert not torch.equal(G.fc[0].weight, G3.fc[0].weight)


def test_resumed_training_equals_uninterrupted(tmp_path):
    full, _, _ = train_wgan_gp(tiny(), progress=False)
    ckpt = tmp_path / "w.pt"
    train_wgan_gp(tiny(iters=2), checkpoint=ckpt, progress=False)    # "interrupted" after 2 iterations
    assert ckpt.exists() and ckpt.with_suffix(".pt.json").exists()
    resumed, _, m = train_wgan_gp(tiny(), checkpoint=ckpt, progress=False)
    assert [h["iter"] for h in m["history"]] == [2, 4]
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), k


def test_zoo_entry_trains_through_the_cli_and_loads(tmp_path, monkeypatch):
    entry = zoo.REGISTRY["fmnist/wgan-gp"]
    assert entry.trainer == "advlab.purifiers.defense_gan.train" and isinstance(zoo.build("fmnist/wgan-gp"), Generator)
    monkeypatch.setattr(entry, "train_quick", dict(iters=1, batch_size=4, n_critic=1, n_train=32, eval_n=2,
                                                   eval_steps=1, eval_restarts=1))
    monkeypatch.setattr(entry, "dataset", "synthetic")
    assert cli.main(["train", "fmnist/wgan-gp", "--profile", "quick", "--out", str(tmp_path), "--device", "cpu"]) == 0
    rec = zoo.info("fmnist/wgan-gp", root=tmp_path)
    assert rec["command"].startswith("advlab train fmnist/wgan-gp") and "recon_mse" in rec["metrics"]
    assert rec["config"]["iters"] == 1 and rec["config"]["latent_dim"] == 128
    G = zoo.load("fmnist/wgan-gp", root=tmp_path)
    assert isinstance(G, Generator) and not G.training
    from advlab.training.zoo_entry import checkpoint_key
    # the checkpoint's key is the digest of the config the manifest stores (runs/ matches carried states by it)
    assert [p.name for p in (tmp_path / "checkpoints").glob("fmnist__wgan-gp_*.pt")] == \
        [f"fmnist__wgan-gp_{checkpoint_key(rec['config'])}.pt"]
