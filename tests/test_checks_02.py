"""advlab.checks for exercise set 02 (stronger attacks): each check passes on the reference answer,
fails with its specific diagnosis on a typical mistake, and reports a blank as pending."""
import pytest
import torch

from advlab import checks
from advlab.evaluate import accuracy


# reference answers of exercise set 02 -------------------------------------------------------
def dlr_loss(logits, y):
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    s = logits.sort(1, descending=True).values
    return -(z_y - other) / (s[:, 0] - s[:, 2] + 1e-12)


def cw_objective(logits, y, kappa=0.0, targeted=False):
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    margin = other - z_y if targeted else z_y - other
    return margin.clamp(min=-kappa)


def robust_acc_from_norms(norms, success, eps_grid):
    return torch.tensor([((~success) | (norms > e)).float().mean().item() for e in eps_grid])


def transfer_table(models, attack, x, y):
    names = list(models)
    table = torch.zeros(len(names), len(names))
    for i, s in enumerate(names):
        x_adv = attack(models[s], x, y)
        for j, t in enumerate(names):
            table[i, j] = accuracy(models[t], x_adv, y)
    return table


REFERENCE = [
    (checks.check_dlr_loss, dlr_loss),
    (checks.check_dlr_loss, lambda z, y: dlr_loss(z, y).double()),  # no epsilon / other dtype: fine
    (checks.check_cw_objective, cw_objective),
    (checks.check_robust_acc_from_norms, robust_acc_from_norms),
    (checks.check_robust_acc_from_norms, lambda n, s, g: [float(v) for v in robust_acc_from_norms(n, s, g)]),
    (checks.check_robust_acc_from_norms, lambda n, s, g: robust_acc_from_norms(n, s, g).numpy()),
    (checks.check_transfer_table, transfer_table),
    (checks.check_transfer_table, lambda m, a, x, y: transfer_table(m, a, x, y).tolist()),
]


@pytest.mark.parametrize("check,answer", REFERENCE, ids=lambda v: getattr(v, "__name__", repr(v)))
def test_reference_passes(check, answer, capsys):
    assert check(answer) is True
    out = capsys.readouterr().out
    assert out.startswith("✅ ") and checks.PENDING not in out


# typical mistakes ---------------------------------------------------------------------------
def _zy(z, y):
    return z.gather(1, y[:, None]).squeeze(1)


def _other(z, y):
    return z.scatter(1, y[:, None], float("-inf")).amax(1)


def _sorted(z):
    return z.sort(1, descending=True).values


def _dlr_den(den):
    return lambda z, y: (_other(z, y) - _zy(z, y)) / den(z, y)


def _margin(z, y, targeted):
    return _other(z, y) - _zy(z, y) if targeted else _zy(z, y) - _other(z, y)


def _in_place_dlr(logits, y):
    z = logits
    z.sub_(z.mean(1, keepdim=True))
    return dlr_loss(z, y)


def _transfer_white_box(models, attack, x, y):
    names = list(models)
    return torch.tensor([[accuracy(models[t], attack(models[t], x, y), y) for t in names] for _ in names])


def _transfer_repeated(models, attack, x, y):  # right, but crafts the images once per entry
    names = list(models)
    return torch.tensor([[accuracy(models[t], attack(models[s], x, y), y) for t in names] for s in names])


WRONG = [  # (check, wrong answer, words the diagnosis must contain)
    # DLR
    (checks.check_dlr_loss, lambda z, y: -dlr_loss(z, y), "sign flipped"),
    (checks.check_dlr_loss, lambda z, y: (z.amax(1) - _zy(z, y)) / (_sorted(z)[:, 0] - _sorted(z)[:, 2]),
     "the true class included"),
    (checks.check_dlr_loss, lambda z, y: _other(z, y) - _zy(z, y), "not scale-invariant"),
    (checks.check_dlr_loss, _dlr_den(lambda z, y: _sorted(z)[:, 0] - _sorted(z)[:, 1]), "wrong denominator"),
    (checks.check_dlr_loss, _dlr_den(lambda z, y: _zy(z, y) - _sorted(z)[:, 2]), "largest logit z_π1 whichever"),
    (checks.check_dlr_loss, _dlr_den(lambda z, y: _sorted(z)[:, 0] - _sorted(z)[:, 3]), "z_π4"),
    (checks.check_dlr_loss, _dlr_den(lambda z, y: z.sort(1).values[:, 0] - z.sort(1).values[:, 2]), "descending"),
    (checks.check_dlr_loss, lambda z, y: dlr_loss(z.softmax(1), y), "probabilities"),
    (checks.check_dlr_loss, lambda z, y: (_other(z, y) - _zy(z, y)) / (_sorted(z)[:, 0] - _sorted(z)[:, 2] + 1.0),
     "not scale-invariant"),
    (checks.check_dlr_loss, lambda z, y: dlr_loss(z, y).mean(), "single number for the whole batch"),
    (checks.check_dlr_loss, lambda z, y: dlr_loss(z[:, :10].reshape(-1, 10), y), "raised RuntimeError"),
    (checks.check_dlr_loss, _in_place_dlr, "modified its input logits in place"),
    # C&W
    (checks.check_cw_objective, lambda z, y, kappa=0.0, targeted=False: cw_objective(z, y, kappa, not targeted),
     "sign flipped"),
    (checks.check_cw_objective, lambda z, y, kappa=0.0, targeted=False: _margin(z, y, targeted), "no clamp at -κ"),
    (checks.check_cw_objective, lambda z, y, kappa=0.0, targeted=False: _margin(z, y, targeted).clamp(min=kappa),
     "clamps at +κ"),
    (checks.check_cw_objective, lambda z, y, kappa=0.0, targeted=False: _margin(z, y, targeted).clamp(max=-kappa),
     "min(margin, -κ)"),
    (checks.check_cw_objective, lambda z, y, kappa=0.0, targeted=False: (_margin(z, y, targeted) + kappa).clamp(min=0),
     "f + κ"),
    (checks.check_cw_objective, lambda z, y, kappa=0.0, targeted=False: cw_objective(z, y, 0.0, targeted),
     "ignores kappa"),
    (checks.check_cw_objective, lambda z, y, kappa=0.0, targeted=False: cw_objective(z, y, kappa, False),
     "ignores targeted=True"),
    (checks.check_cw_objective,
     lambda z, y, kappa=0.0, targeted=False: (_zy(z, y) - z.amax(1)).clamp(min=-kappa) if not targeted
     else cw_objective(z, y, kappa, True), "the class y included"),
    (checks.check_cw_objective, lambda z, y, kappa=0.0, targeted=False: cw_objective(z.softmax(1), y, kappa, targeted),
     "probabilities"),
    (checks.check_cw_objective, lambda z, y: cw_objective(z, y), "raised TypeError"),
    # robust accuracy from minimal norms
    (checks.check_robust_acc_from_norms,
     lambda n, s, g: torch.tensor([((~s) | (n >= e)).float().mean().item() for e in g]), "not ≥ ε"),
    (checks.check_robust_acc_from_norms, lambda n, s, g: torch.tensor([(n > e).float().mean().item() for e in g]),
     "ignores `success`"),
    (checks.check_robust_acc_from_norms, lambda n, s, g: 1 - robust_acc_from_norms(n, s, g), "wrong way round"),
    (checks.check_robust_acc_from_norms,
     lambda n, s, g: torch.tensor([(s & (n <= e)).float().mean().item() for e in g]), "wrong way round"),
    (checks.check_robust_acc_from_norms, lambda n, s, g: robust_acc_from_norms(n, s, g) * len(n), "counts"),
    (checks.check_robust_acc_from_norms, lambda n, s, g: robust_acc_from_norms(n, s, g) * 100, "percentages"),
    (checks.check_robust_acc_from_norms, lambda n, s, g: robust_acc_from_norms(n, s, g)[:-1], "one per ε"),
    (checks.check_robust_acc_from_norms, lambda n, s, g: ((~s) | (n > 1.0)).float(), "one per ε"),
    (checks.check_robust_acc_from_norms,
     lambda n, s, g: robust_acc_from_norms(n, s, g).flip(0), "increases with ε"),
    # transfer table
    (checks.check_transfer_table, lambda m, a, x, y: transfer_table(m, a, x, y).T, "transposed"),
    (checks.check_transfer_table,
     lambda m, a, x, y: (a(next(iter(m.values())), x, y), torch.tensor([[accuracy(m[t], x, y) for t in m] for _ in m]))[1],
     "clean accuracies"),
    (checks.check_transfer_table, _transfer_white_box, "white-box everywhere"),
    (checks.check_transfer_table, lambda m, a, x, y: transfer_table(m, a, x, y) * 100, "percentages"),
    (checks.check_transfer_table, lambda m, a, x, y: transfer_table(m, a, x, y)[:2], "expected (3, 3)"),
    (checks.check_transfer_table, lambda m, a, x, y: torch.eye(3), "never called `attack`"),
    (checks.check_transfer_table, lambda m, a, x, y: {"a": 1.0}, "returned a dict"),
]


@pytest.mark.parametrize("check,answer,words", WRONG, ids=lambda v: v if isinstance(v, str) else None)
def test_wrong_answer_gets_specific_diagnosis(check, answer, words):
    with pytest.raises(AssertionError) as e:
        check(answer)
    msg = str(e.value)
    assert msg.startswith("❌ ")
    assert words in msg, msg


def test_transfer_table_notes_repeated_crafting(capsys):
    assert checks.check_transfer_table(_transfer_repeated) is True
    out = capsys.readouterr().out
    assert "once per source" in out


def _blank(*args, **kwargs):
    raise NotImplementedError


@pytest.mark.parametrize("check", [checks.check_dlr_loss, checks.check_cw_objective,
                                   checks.check_robust_acc_from_norms, checks.check_transfer_table],
                         ids=lambda c: c.__name__)
def test_blank_is_pending(check, capsys):
    assert check(_blank) is False
    assert capsys.readouterr().out.strip() == checks.PENDING
    assert check(None) is False
    name = check.__name__.removeprefix("check_")
    assert checks.RESULTS[name] == "pending"


def test_registered():
    for name in ("dlr_loss", "cw_objective", "robust_acc_from_norms", "transfer_table"):
        assert name in checks.CHECKS


def test_reference_agrees_with_the_library():
    """The exercise answers are the losses advlab's attacks use."""
    from advlab.attacks import CW, dlr_loss as lib_dlr
    g = torch.Generator().manual_seed(0)
    z = torch.randn(32, 10, generator=g) * 4
    y = torch.randint(0, 10, (32,), generator=g)
    assert torch.allclose(dlr_loss(z, y), lib_dlr(z, y), atol=1e-6)
    for targeted in (False, True):
        cw = CW(kappa=1.5, targeted=targeted)
        assert torch.allclose(cw_objective(z, y, 1.5, targeted), cw._margin(z, y).clamp(min=-1.5))


def test_checks_leave_global_rng_alone():
    torch.manual_seed(123)
    a = torch.rand(3)
    torch.manual_seed(123)
    for check, answer in REFERENCE[:4]:
        check(answer)
    assert torch.equal(torch.rand(3), a)


def test_check_output_is_deterministic(capsys):
    for _ in range(2):
        for check, answer in REFERENCE:
            check(answer)
    out = capsys.readouterr().out.strip().splitlines()
    half = len(out) // 2
    assert out[:half] == out[half:]
