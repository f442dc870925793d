"""advlab.fake_cuda: DEVICE = "cuda" code runs on the CPU and fails where a GPU would on device mixing."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab.fake_cuda import FakeCuda


def test_moves_report_cuda_and_compute_on_cpu():
    a = torch.arange(6.0).view(2, 3)
    with FakeCuda() as fake:
        b = a.to("cuda")
        assert b is not a and b.device == torch.device("cuda", 0) and b.is_cuda and b.get_device() == 0
        assert not fake.on(a) and a.device.type == "cpu"           # the source stays a CPU tensor
        c = (b * 2).sum(0)                                         # results of device tensors are device tensors
        assert fake.on(c) and c.tolist() == [6.0, 10.0, 14.0]
        z = torch.zeros(3, device=c.device)                        # code that copies a tensor's device works
        assert fake.on(z) and fake.on(c + z)
        back = c.cpu()
        assert not fake.on(back) and back.numpy().tolist() == [6.0, 10.0, 14.0]
        assert b.to(torch.float64).dtype == torch.float64 and fake.on(b.to(torch.float64))
        assert fake.on(a.to(b)) and not fake.on(b.to(a))           # .to(other) follows other's device


@pytest.mark.parametrize("mix", [
    lambda d, c: d + c,
    lambda d, c: torch.cat([d, c]),
    lambda d, c: torch.where(c > 0, d, d),
    lambda d, c: nn.functional.mse_loss(d, c),
])
def test_mixing_fails_like_cuda(mix):
    c = torch.rand(2, 3)
    with FakeCuda():
        d = torch.rand(2, 3).cuda()
        with pytest.raises(RuntimeError, match="same device"):
            mix(d, c)
        mix(d, c.to(d.device))                                     # moved first: fine
        d + torch.tensor(2.0)                                      # 0-dim CPU tensors mix, as on CUDA


def test_numpy_and_generators_fail_like_cuda():
    with FakeCuda():
        d = torch.rand(3, device="cuda")
        with pytest.raises(TypeError, match="numpy"):
            d.numpy()
        with pytest.raises(TypeError, match="numpy"):
            __import__("numpy").asarray(d)
        with pytest.raises(RuntimeError, match="generator"):
            torch.randn(3, generator=torch.Generator().manual_seed(0), device="cuda")
        g = torch.Generator(device="cuda").manual_seed(0)
        assert torch.randn(3, generator=g, device="cuda").is_cuda
        assert d.max().item() <= 1 and len(d.tolist()) == 3 and float(d.sum()) >= 0


def test_indexing_and_assignment_follow_cuda_rules():
    with FakeCuda():
        d = torch.zeros(4, 2, device="cuda")
        d[torch.tensor([0, 2])] = torch.ones(2, 2)                 # CPU indices and values into a device tensor
        assert d[torch.tensor([True, False, True, False])].sum().item() == 4
        d.copy_(torch.ones(4, 2))
        cpu = torch.zeros(4)
        with pytest.raises(RuntimeError, match="indices"):
            cpu[torch.tensor([0, 1], device="cuda")]


def test_modules_gradients_and_optimisers():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2 * 26 * 26, 3))
    x = torch.rand(4, 1, 28, 28)
    with FakeCuda() as fake:
        net.to("cuda")
        assert all(fake.on(p) for p in net.parameters()) and fake.on(net[1].running_mean)
        with pytest.raises(RuntimeError, match="same device"):
            net(x)                                                 # a CPU batch into a device model
        xd = x.cuda().requires_grad_(True)
        loss = net(xd).logsumexp(1).mean()
        gx, = torch.autograd.grad(loss, xd, retain_graph=True)
        assert fake.on(gx) and fake.on(xd + 0.1 * gx.sign())
        loss.backward()
        opt = torch.optim.Adam(net.parameters(), 1e-3)
        opt.step()                                                 # .grad of device parameters is on the device
        assert all(fake.on(p.grad) for p in net.parameters())
        net.cpu()
        assert not any(fake.on(p) for p in net.parameters())
        net(x)


def test_patches_are_undone_on_exit():
    real = torch.cuda.is_available(), torch.Generator, nn.Module.to
    with FakeCuda():
        assert torch.cuda.is_available() and torch.cuda.device_count() == 1
        torch.cuda.synchronize()
    assert (torch.cuda.is_available(), torch.Generator, nn.Module.to) == real


def test_course_run_fake_cuda_finds_a_mixing_notebook(tmp_path):
    """`advlab course run --fake-cuda` runs a notebook with DEVICE = "cuda" under FakeCuda in the kernel: a
    notebook that adds CPU noise to a device batch fails, the fixed one runs."""
    pytest.importorskip("papermill")
    from advlab import course
    import nbformat
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'advlab'\n")
    for name, noise in (("98_bad.ipynb", "torch.rand(2, 3)"), ("99_good.ipynb", "torch.rand(2, 3).to(DEVICE)")):
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        params = nbformat.v4.new_code_cell('PROFILE = "quick"\nDEVICE = "cpu"\nSEED = 0\nOUT_DIR = "x"')
        params.metadata["tags"] = ["parameters"]
        nb.cells = [params, nbformat.v4.new_code_cell(
            "import torch\nx = torch.zeros(2, 3, device=DEVICE)\nprint(DEVICE, x.device, (x + " + noise + ").shape)")]
        nbformat.write(nb, nbdir / name)
    assert course.run(only="98", out=tmp_path / "out", root=tmp_path, fake_cuda=True, progress="none") == 1
    failed = nbformat.read(tmp_path / "out" / "notebooks" / "98_bad.ipynb", as_version=4)
    assert "same device" in str(failed.cells[-1].outputs)
    assert course.run(only="99", out=tmp_path / "out", root=tmp_path, fake_cuda=True, progress="none") == 0
    done = nbformat.read(tmp_path / "out" / "notebooks" / "99_good.ipynb", as_version=4)
    assert "cuda cuda:0 torch.Size([2, 3])" in done.cells[-1].outputs[0]["text"]
    import json
    table = json.loads((tmp_path / "out" / "course_run.json").read_text())    # the last run's table
    assert table["fake_cuda"] and table["device"] == "cuda" and table["failures"] == []
    assert [(r["notebook"], r["status"]) for r in table["notebooks"]] == [("notebooks/99_good.ipynb", "ok")]


CHEAP = {"defense-gan": dict(steps=3, restarts=2), "vaegan": {}, "lqvae": {}, "carso": dict(n_samples=2),
         "mlvgm": {}, "cmap": dict(k=2, iters=2)}


@pytest.mark.parametrize("name", sorted(CHEAP))
def test_purifiers_on_the_device(name):
    """Every registered purifier, built from the zoo on "cuda": purification, prediction and the adaptive
    model's input gradient stay on the device, with no CPU tensor mixed in (untrained zoo parts skip; CMAP runs on
    a small untrained consistency model until the zoo has one)."""
    from advlab import data, purifiers, zoo
    assert set(CHEAP) == set(purifiers.names())
    torch.manual_seed(0)
    with FakeCuda() as fake:
        try:
            defense = purifiers.get(name).from_zoo("fashion_mnist", device="cuda", **CHEAP[name])
        except zoo.NotTrainedError as e:
            if name != "cmap":
                pytest.skip(str(e).splitlines()[0])
            from advlab.purifiers.cmap.model import ConsistencyModel     # untrained consistency model: same code
            defense = purifiers.get(name)(ConsistencyModel(1, 8, 16), zoo.load("fmnist/cnn"), **CHEAP[name])
            defense = defense.to("cuda").eval()
        x, y = data.batch("fashion_mnist", "test", n=3, seed=0, device="cuda")
        assert fake.on(x) and fake.on(defense.purify(x)) and fake.on(defense(x))
        xg = x.clone().requires_grad_(True)
        loss = nn.functional.cross_entropy(defense.adaptive_model()(xg), y)
        grad, = torch.autograd.grad(loss, xg)
        assert fake.on(grad) and grad.shape == x.shape
