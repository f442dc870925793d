"""advlab.training.carry: a training checkpoint packed for git (float16 weights, bfloat16 moments, safetensors
+ json) unpacks into a checkpoint that resumes the same run: same iteration, history and generator states,
weights equal up to the rounding, and the resumed run goes on to the end."""
import json

import pytest
import torch

from advlab.purifiers.cmap.train import CTConfig, train_consistency
from advlab.training import carry

pytestmark = pytest.mark.usefixtures("one_thread")


def cfg(**kw):
    base = dict(dataset="synthetic", width=8, emb_dim=16, dropout=0.0, iters=4, batch_size=4, n_train=16,
                log_every=1, ckpt_every=1, eval_n=4, device="cpu")
    return CTConfig(**base | kw)


def test_pack_unpack_resumes_the_same_run(tmp_path):
    ck = tmp_path / "build" / "ct_run.pt"
    train_consistency(cfg(iters=2), checkpoint=ck, progress=False)
    before = torch.load(ck, map_location="cpu", weights_only=True)
    folder = carry.pack(ck, tmp_path / "runs" / "training")
    assert folder.name == "ct_run" and {p.name for p in folder.iterdir()} == {"state.json", "tensors.safetensors"}
    assert json.loads((folder / "state.json").read_text())["iter"] == 2
    from safetensors.torch import load_file
    stored = load_file(folder / "tensors.safetensors")
    assert any(v.dtype == torch.float16 for k, v in stored.items() if k.startswith("model/"))
    assert {v.dtype for k, v in stored.items() if "exp_avg" in k and v.numel() > 1} == {torch.bfloat16}
    with pytest.raises(FileExistsError, match="^checkpoint_dir: "):      # never clobber a run further along
        carry.unpack(folder, ck.parent)
    dst = carry.unpack(folder, tmp_path / "fresh")
    after = torch.load(dst, map_location="cpu", weights_only=True)
    assert after["meta"] == before["meta"] and torch.equal(after["g"], before["g"])
    assert torch.equal(after["torch_rng"], before["torch_rng"])
    assert after["opt"]["param_groups"] == before["opt"]["param_groups"] and after["sched"] == before["sched"]
    for name in ("model", "ema"):
        for k, v in before[name].items():
            assert after[name][k].dtype == v.dtype
            assert torch.allclose(after[name][k].float(), v.float(), rtol=1e-3, atol=1e-6), (name, k)
    for i, st in before["opt"]["state"].items():
        for k, v in st.items():
            assert torch.allclose(after["opt"]["state"][i][k].float(), v.float(), rtol=1e-2, atol=1e-12), (i, k)
    m, metrics = train_consistency(cfg(), checkpoint=dst, progress=False)        # resumes at 2, ends at 4
    assert [h["iter"] for h in metrics["history"]] == [1, 2, 3, 4] and metrics["history"][-1]["call"] == 2
    ref, _ = train_consistency(cfg(), progress=False)                              # uninterrupted run
    for k, v in ref.state_dict().items():
        assert torch.allclose(m.state_dict()[k].float(), v.float(), rtol=0.05, atol=1e-3), k


def test_cli_errors_name_the_argument(tmp_path, capsys):
    assert carry.main(["pack", str(tmp_path / "missing.pt")]) == 2
    assert capsys.readouterr().err.startswith("carry pack: checkpoint: ")
    assert carry.main(["unpack", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("carry unpack: folder: ")
