"""Defense reports: clean, grey-box, adaptive and large-eps sanity rows of a purifier, side by side.

    rep = defense_report(defense, x, y)       # a dict; format_report(rep) renders it as markdown
"""
from __future__ import annotations

import torch
import torch.nn as nn

from advlab.metrics import accuracy, predict, robust_accuracy  # noqa: F401


SANITY_EPS = (0.1, 0.3, 0.5, 1.0)


def _with(attack, **changes):
    """A copy of `attack` with some settings changed (only those it has)."""
    import copy
    new = copy.copy(attack)
    for k, v in changes.items():
        if hasattr(new, k):
            setattr(new, k, v)
    return new


def defense_report(defense, x: torch.Tensor, y: torch.Tensor, attack=None, eps: float = 0.1,
                   eot_iter: int = 8, backward=None, sanity_eps=SANITY_EPS, sanity_margin: float = 0.1,
                   sanity_n: int | None = None, batch_size: int = 500, adaptive_n: int | None = None,
                   x_adv: torch.Tensor | None = None) -> dict:
    """Evaluate a purification defense honestly; every accuracy carries the attack that produced it.

    defense: an advlab.defenses.Defense (nn.Module images -> logits with .purify, .classifier,
    .stochastic, .adaptive_model()). attack: any advlab attack; default
    `attacks.presets.pgd40(eps)` (PGD-40, step eps / 10 = 0.01 at the default eps 0.1, random start,
    Linf); `eps` is used only for that default.
    Rows of the report:
      clean        accuracy of the classifier alone and of the defense on x;
      undefended   the attack on the classifier, classified by the classifier;
      grey_box     the same adversarial images (crafted on the classifier alone), through the defense;
      adaptive     the attack end to end on defense.adaptive_model(backward) (the defense itself
                   when differentiable, else BPDA), with eot_iter gradient samples (EoT) when the
                   defense is stochastic; the adversarial images are classified by the defense;
      sanity       the adaptive attack at each eps of sanity_eps, started at x (no random start:
                   at eps = 1 a random start alone reaches chance without any gradient) with step
                   2.5 * eps / steps; accuracy at the largest eps must be <= 1/num_classes +
                   sanity_margin, else the evaluation is broken (masked gradients, too few steps).
                   sanity_eps is in the attack's norm: the defaults suit Linf on [0, 1] images;
                   pass larger radii for L2 (e.g. (2, 5, 10, 28) on 28x28 images).
                   sanity_n: run the sweep on the first sanity_n images only (None: all of x);
                   the sweep costs len(sanity_eps) adaptive attacks, which adds up for
                   optimisation-based purifiers.
    adaptive_n: run the adaptive row on the first adaptive_n images only (None: all of x), for
    purifiers whose adaptive attack (BPDA + EoT through a search) costs far more than the rest;
    every row records its own n.
    x_adv: attack(defense.classifier, x, y) when it is already crafted (advlab evaluate and
    defense-report take it from evaluation.adversarial_set's cache); None: crafted here.
    Returns a json-serialisable dict; `format_report` renders it, `save_report` writes it.
    """
    from advlab.attacks.presets import pgd40
    from advlab.validate import check_fit, check_images, check_labels
    if not isinstance(defense, nn.Module) or not hasattr(defense, "purify") or not hasattr(defense, "classifier"):
        raise ValueError(f"defense: expected an advlab.defenses.Defense, got {type(defense).__name__}")
    check_images(x, "x")
    check_labels(y, len(x), None, "y")
    if isinstance(defense.classifier, nn.Module):   # images and labels fit the classifier, checked once
        x, y = check_fit(defense.classifier, x, y)
    if isinstance(eot_iter, bool) or not isinstance(eot_iter, int) or eot_iter < 1:
        raise ValueError(f"eot_iter: must be an int >= 1, got {eot_iter!r}")
    if not (isinstance(sanity_margin, (int, float)) and 0 <= sanity_margin <= 1):
        raise ValueError(f"sanity_margin: must be a number in [0, 1], got {sanity_margin!r}")
    sanity_eps = tuple(sanity_eps)
    if any(not isinstance(e, (int, float)) or isinstance(e, bool) or not e > 0 for e in sanity_eps):
        raise ValueError(f"sanity_eps: must be positive numbers, got {sanity_eps!r}")
    for name, v in (("sanity_n", sanity_n), ("adaptive_n", adaptive_n)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"{name}: must be a positive int or None, got {v!r}")
    if attack is None:
        attack = pgd40(eps)
    elif not callable(attack):
        raise ValueError(f"attack: expected an attack callable atk(model, x, y), got {type(attack).__name__}")
    if x_adv is not None and (not isinstance(x_adv, torch.Tensor) or x_adv.shape != x.shape):
        raise ValueError(f"x_adv: expected the attack's images, a tensor of x's shape {tuple(x.shape)}, got "
                         + (f"shape {tuple(x_adv.shape)}" if isinstance(x_adv, torch.Tensor) else type(x_adv).__name__))
    from advlab.validate import eval_mode
    with eval_mode(defense):  # every module's own train flag is restored afterwards
        return _defense_report(defense, x, y, attack, eot_iter, backward, sanity_eps, sanity_margin, sanity_n,
                               batch_size, adaptive_n, x_adv)


def _defense_report(defense, x, y, attack, eot_iter, backward, sanity_eps, sanity_margin, sanity_n,
                    batch_size, adaptive_n=None, x_adv=None) -> dict:
    import time
    import warnings
    from advlab.validate import check_labels
    t0 = time.time()
    clf = defense.classifier
    with torch.no_grad():
        num_classes = clf(x[:1]).shape[1]
    check_labels(y, len(x), num_classes, "y")
    stochastic = bool(getattr(defense, "stochastic", False))
    adaptive_attack = _with(attack, eot_iter=eot_iter) if stochastic else attack
    adaptive = defense.adaptive_model(backward) if hasattr(defense, "adaptive_model") else defense
    rep = {"defense": defense.describe() if hasattr(defense, "describe") else type(defense).__name__,
           "classifier": type(clf).__name__, "n": len(x), "num_classes": num_classes,
           "chance": 1.0 / num_classes, "stochastic": stochastic,
           "adaptive_model": _describe_model(adaptive, defense)}
    n = len(x)
    rep["clean"] = {"classifier": {"acc": accuracy(clf, x, y, batch_size), "attack": None, "n": n},
                    "defense": {"acc": accuracy(defense, x, y, batch_size), "attack": None, "n": n}}
    if x_adv is None:
        x_adv = attack(clf, x, y)
    x_adv = x_adv.to(x.device)
    rep["undefended"] = {"acc": accuracy(clf, x_adv, y, batch_size), "attack": repr(attack),
                         "attacked": "classifier", "classified_by": "classifier", "n": n}
    rep["grey_box"] = {"acc": accuracy(defense, x_adv, y, batch_size), "attack": repr(attack),
                       "attacked": "classifier", "classified_by": "defense", "n": n}
    xa, ya = x[:adaptive_n], y[:adaptive_n]
    x_ad = adaptive_attack(adaptive, xa, ya)
    rep["adaptive"] = {"acc": accuracy(defense, x_ad, ya, batch_size), "attack": repr(adaptive_attack),
                       "attacked": rep["adaptive_model"], "classified_by": "defense", "n": len(xa)}
    rows, xs, ys = [], x[:sanity_n], y[:sanity_n]
    for e in sanity_eps:
        steps = getattr(adaptive_attack, "steps", None)
        changes = {"eps": float(e), "random_start": False}
        if steps and hasattr(adaptive_attack, "alpha"):
            changes["alpha"] = max(float(adaptive_attack.alpha), 2.5 * e / steps)
        atk = _with(adaptive_attack, **changes)
        rows.append({"eps": float(e), "acc": accuracy(defense, atk(adaptive, xs, ys), ys, batch_size),
                     "attack": repr(atk), "n": len(xs)})
    threshold = 1.0 / num_classes + sanity_margin
    passed = bool(rows) and rows[-1]["acc"] <= threshold
    message = (f"passed: adaptive accuracy {rows[-1]['acc']:.1%} at eps {rows[-1]['eps']:g} <= {threshold:.1%}"
               if passed else
               "evaluation broken: adaptive accuracy " + (f"{rows[-1]['acc']:.1%} at eps {rows[-1]['eps']:g}"
                                                          if rows else "(no eps checked)")
               + f" stays above chance + margin ({threshold:.1%}); the attack does not see the defense's "
                 "gradient (use BPDA / EoT, more steps) and every robust number above is an overestimate")
    informative = rep["clean"]["defense"]["acc"] > threshold
    if not informative:
        message += " (uninformative: the defense's clean accuracy is already at chance)"
    rep["sanity"] = {"rows": rows, "threshold": threshold, "passed": passed, "informative": informative,
                     "message": message}
    if not passed:
        warnings.warn(f"defense_report: {message}", RuntimeWarning, stacklevel=3)
    rep["seconds"] = round(time.time() - t0, 1)
    return rep


def _describe_model(model, defense) -> str:
    if model is defense:
        return "defense end to end (exact gradient)"
    inner = getattr(model, "0", None) if isinstance(model, nn.Sequential) else None
    if inner is not None and hasattr(inner, "backward_fn"):
        bw = inner.backward_fn
        name = "identity" if bw is None else getattr(bw, "__qualname__", type(bw).__name__)
        return f"BPDA(purify, backward={name}) + classifier"
    return type(model).__name__


def report_rows(report: dict) -> list[dict]:
    """The report as flat rows: setting, accuracy, images, attack."""
    n = report["n"]
    rows = [{"setting": "clean (classifier alone)", "acc": report["clean"]["classifier"]["acc"], "attack": "-"},
            {"setting": "clean (defense)", "acc": report["clean"]["defense"]["acc"], "attack": "-"},
            {"setting": "undefended (attack on classifier)", "acc": report["undefended"]["acc"],
             "attack": report["undefended"]["attack"]},
            {"setting": "grey box (attack on classifier, then defense)", "acc": report["grey_box"]["acc"],
             "attack": report["grey_box"]["attack"]},
            {"setting": f"adaptive ({report['adaptive_model']})", "acc": report["adaptive"]["acc"],
             "attack": report["adaptive"]["attack"], "n": report["adaptive"].get("n", n)}]
    rows += [{"setting": f"sanity: adaptive at eps {r['eps']:g}", "acc": r["acc"], "attack": r["attack"],
              "n": r.get("n", n)} for r in report["sanity"]["rows"]]
    return [r | {"n": r.get("n", n)} for r in rows]


def format_report(report: dict, fmt: str = "markdown") -> str:
    """The report as a markdown table (fmt="markdown") or aligned plain text (fmt="text")."""
    if fmt not in ("markdown", "text"):
        raise ValueError(f"fmt: must be 'markdown' or 'text', got {fmt!r}")
    rows = [(r["setting"], f"{100 * r['acc']:.2f}%", str(r["n"]), r["attack"]) for r in report_rows(report)]
    head = ("setting", "accuracy", "images", "attack")
    title = f"{report['defense']} on {report['n']} images (chance {100 * report['chance']:.1f}%)"
    footer = f"sanity check {report['sanity']['message']}"
    if fmt == "markdown":
        lines = [f"**{title}**", "", "| " + " | ".join(head) + " |", "|---|---:|---:|---|"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
        return "\n".join(lines + ["", footer])
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    fmt_row = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([title, fmt_row(head), fmt_row(tuple("-" * w for w in widths))] + [fmt_row(r) for r in rows]
                     + [footer])


def save_report(report: dict, path) -> None:
    """Write the report as json (creating parent folders; atomic: a crash leaves the old file or the new)."""
    from advlab.zoo import atomic
    atomic.write_json(path, report)
