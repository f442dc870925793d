"""purifiers.voting: the K-draw decision rules (vote with its tie-break, CARSO's aggregation computed
without overflow, worst-of-N) and the smooth adaptive model attackers differentiate."""
import pytest
import torch
import torch.nn as nn

from advlab.purifiers.voting import RULES, Voting, aggregate, worst_of_n


def test_vote_is_the_majority_and_ties_go_to_the_larger_summed_logit():
    # 3 draws, 1 image, 3 classes: votes 0, 0, 1 -> class 0
    z = torch.tensor([[[5.0, 1.0, 0.0]], [[4.0, 2.0, 0.0]], [[0.0, 9.0, 0.0]]])
    assert aggregate(z, "vote").argmax(1).item() == 0
    # 2 draws tied 1-1 between classes 0 and 1; class 1 has the larger summed logit
    z = torch.tensor([[[3.0, 2.9, 0.0]], [[0.0, 8.0, 0.0]]])
    assert aggregate(z, "vote").argmax(1).item() == 1
    # the tie-break never outweighs one vote
    s = aggregate(torch.randn(5, 64, 10) * 50, "vote")
    counts = s.floor()
    assert torch.equal(s.argmax(1), torch.where(counts == counts.amax(1, keepdim=True), s, -1.0).argmax(1))


def test_carso_rule_matches_the_formula_and_does_not_overflow():
    z = torch.randn(8, 16, 10)
    want = torch.softmax(z.double().exp().sum(0), 1)
    got = torch.softmax(aggregate(z, "carso").double(), 1)
    assert torch.allclose(got, want, atol=1e-6)
    big = torch.full((4, 2, 3), 500.0)
    big[:, :, 1] = 501.0                           # exp(exp(501)) overflows float32 and float64
    s = aggregate(big, "carso")
    assert torch.isfinite(s).all() and s.argmax(1).tolist() == [1, 1]


def test_mean_probs_is_the_log_of_the_mean_softmax():
    z = torch.randn(6, 5, 4)
    assert torch.allclose(aggregate(z, "mean_probs").exp(), torch.softmax(z, 2).mean(0), atol=1e-6)
    assert torch.allclose(aggregate(z, "mean_logits"), z.mean(0))


def test_worst_of_n_needs_every_draw_right():
    z = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    assert worst_of_n(z, torch.tensor([0])).tolist() == [False]
    assert worst_of_n(z[:1], torch.tensor([0])).tolist() == [True]


class Noisy(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        return self.lin(x.flatten(1) + 0.1 * torch.randn_like(x.flatten(1)))


@pytest.mark.parametrize("batched", [False, True])
def test_voting_module_draws_k_times_and_its_adaptive_model_has_gradients(batched):
    torch.manual_seed(0)
    net = Noisy()
    v = Voting(net, k=5, rule="vote", batched=batched)
    x = torch.rand(7, 1, 2, 2, requires_grad=True)
    assert v.draws(x).shape == (5, 7, 3) and v(x).shape == (7, 3)
    g, = torch.autograd.grad(v.adaptive_model()(x).logsumexp(1).sum() - v.adaptive_model()(x)[:, 0].sum(), x)
    assert g.abs().sum() > 0                       # the vote itself is flat; the stand-in is not
    assert v.adaptive_model().rule == "mean_probs" and "k=5" in repr(v)


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="^rule: "):
        aggregate(torch.zeros(2, 1, 3), "median")
    with pytest.raises(ValueError, match="^logits: "):
        aggregate(torch.zeros(1, 3), "vote")
    with pytest.raises(ValueError, match="^k: "):
        Voting(nn.Identity(), k=0)
    with pytest.raises(ValueError, match="^draw: "):
        Voting("model")
    assert set(RULES) == {"vote", "carso", "mean_logits", "mean_probs"}


# --- issue 15: Voting checks its input; a fresh BPDA model does not trip the train-mode warning -----------
def _tiny_classifier():
    import torch.nn as nn
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 26 * 26, 10)).eval()


@pytest.mark.parametrize("bad, message", [
    (lambda: torch.rand(2, 3, 28, 28), "x: model expects 1-channel images"),
    (lambda: "images", "x: expected a torch.Tensor"),
    (lambda: torch.full((2, 1, 28, 28), float("nan")), "x: contains NaN"),
    (lambda: torch.rand(2, 1, 28, 28) + 1.0, "x: images must lie in [0, 1]"),
])
def test_voting_rejects_bad_images_naming_x(bad, message):
    from advlab.purifiers.voting import Voting
    with pytest.raises(ValueError) as e:
        Voting(_tiny_classifier(), k=2)(bad())
    assert message in str(e.value)


def test_voting_with_a_plain_function_still_checks_the_images():
    from advlab.purifiers.voting import Voting
    clf = _tiny_classifier()
    with pytest.raises(ValueError, match="x: contains NaN"):
        Voting(lambda t: clf(t), k=2)(torch.full((1, 1, 28, 28), float("nan")))


def test_fresh_bpda_model_runs_without_the_train_mode_warning():
    import warnings
    from advlab import attacks, metrics
    from advlab.attacks.bpda import bpda_model
    clf = _tiny_classifier()
    x, y = torch.rand(4, 1, 28, 28), torch.arange(4)
    model = bpda_model(lambda t: t.clamp(0, 1), clf)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        metrics.robust_accuracy(model, x, y, attacks.PGD(steps=2))
    assert not [m for m in w if "train mode" in str(m.message)]
    clf.train()   # a classifier really in train mode still warns
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        metrics.robust_accuracy(bpda_model(lambda t: t, clf), x, y, attacks.PGD(steps=2))
    assert [m for m in w if "train mode" in str(m.message)]
