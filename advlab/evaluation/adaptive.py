"""Adaptive evaluation of a defense: an attack ensemble, the per-image worst case, and the sanity and
masking checks that say whether the number can be trusted (lectures 10 and 11).

    from advlab.evaluation.adaptive import adaptive_evaluation, format_result
    res = adaptive_evaluation(defense, x, y, eps=0.1, profile="quick")   # a json-serialisable dict
    print(format_result(res))                                             # markdown
    res["headline"]["acc"], res["headline"]["ci95"]                       # the number to quote

Threat model. Linf ball of radius eps around x, images in [0, 1]. The attacker knows the classifier,
the purifier and every weight, not the defense's random draws; it may query the defense as often as
it likes and, for a stochastic defense, resubmit an image (worst-of-N). An image counts as robust
only if it survives EVERY attack of the ensemble (the per-image worst case), each attack run with
the settings and seed its row names:
  apgd-ce[b], apgd-dlr[b]  APGD (Croce & Hein 2020, AutoAttack's schedule; 100 steps in "full")
                           through every backward b the defense offers (`defense.backwards`, via
                           `defense.adaptive_model(b)`: exact, each BPDA surrogate, identity), with
                           EoT over `eot_iter` draws for a stochastic defense (randomised AutoAttack)
  pgd-eot[b]               PGD, 200 steps of 0.007 at 8/255 scaled to eps, EoT 20 (Lee & Kim 2023)
  square                   Square (5000 queries) on the defense's own forward: a gradient-free check
  transfer                 grey box: PGD-40 crafted on `defense.classifier` alone
  consistency-disruption   CMAP only: the defense's own latent search turned against it (Zhang et al.;
                           evaluation.disruption), 100 steps
A plain classifier gets APGD-CE, APGD-DLR, PGD and Square on itself. As in AutoAttack, an attack
runs only on the images every earlier attack left correctly classified (individual=True runs each
on all clean-correct images instead, which gives every attack its own robust accuracy; in the
cascade the earlier attacks get the credit for images a later one would also break, so "strongest"
and the backward the checks use lean towards the first backward).

Randomness (stochastic defenses). "fresh": the defense draws anew on every call, during the attack
and at evaluation; "fixed": one draw is frozen during the attack (the attacker overfits to it) and
evaluation draws anew. An adversarial image is judged by `n_draws` draws under two rules: majority
vote, and worst-of-N (correct on every draw; an attacker may resubmit). The headline is the lowest
honest number: per image, the worst case over both randomness settings under worst-of-N.

Checks, in every result: the strongest backward's accuracy at large eps (Linf 0.95) must fall to
chance + margin; Square (or the transfer) breaking images the white-box attacks could not flags
gradient masking; zero, non-finite or exploding input gradients are counted per backward; a long
PGD must not leave more images correct than a short one.

Cost and scale. Images run in chunks whose per-image results are saved as they finish (shard.ChunkStore
under build/adaptive/, keyed by the defense, its weights, the attacks, the chunk size and the seed, each
chunk's file by its start and its own images): a rerun resumes, and a run on the first n images of a
subset reuses the chunks of a longer run on the same subset, so a long CPU run can be quoted part way
(`saved_progress`). Under `torchrun --nproc_per_node N` each rank takes a block of chunks and rank 0
gathers them; a chunk's result depends only on its images and the seed, so N processes give the
single-process result. Statistics: Wilson score 95% intervals.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass

import torch
import torch.nn as nn

from advlab.evaluation import shard
from advlab.metrics import Z95, wilson  # noqa: F401 (public here too: lectures import wilson from here)
from advlab.validate import device_name
from advlab.evaluation.unrolled import UnrolledCMAP, UnrolledSearch, full_gradient_attack  # noqa: F401 (public here too)

PROFILES = {   # "full" is the protocol of issue 16; "quick" keeps a test or a lecture cell to seconds
    "quick": dict(apgd_steps=10, pgd_steps=20, eot_iter=4, square_queries=100, transfer_steps=10, disruption_steps=10, n_draws=4,
                  chunk=32, sanity_n=32, sanity_steps=20, sanity_eps=(0.3, 0.95), mono_steps=(5, 20)),
    "full": dict(apgd_steps=100, pgd_steps=200, eot_iter=20, square_queries=5000, transfer_steps=40, disruption_steps=100, n_draws=8,
                 chunk=100, sanity_n=200, sanity_steps=100, sanity_eps=(0.3, 0.5, 0.95), mono_steps=(20, 200)),
}


def _seed(*parts) -> int:
    """A 60-bit seed derived from parts (the run's seed, chunk start, setting, attack, purpose)."""
    return int(hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:15], 16)


def _is_purifier(m) -> bool:
    return hasattr(m, "adaptive_model") and hasattr(m, "backwards") and hasattr(m, "classifier")


# ----------------------------------------------------------------------------- the ensemble


@dataclass
class Spec:
    """One attack of the ensemble: `backward` names the gradient it follows (None: no gradient of the
    defense: the transfer from the classifier, or Square on the defense's forward)."""
    name: str
    backward: str | None
    attack: object

    @property
    def key(self) -> str:
        return self.name if self.backward is None else f"{self.name}[{self.backward}]"

    def settings(self) -> dict:
        a = self.attack
        return a._settings() if hasattr(a, "_settings") else {"attack": repr(getattr(a, "attack", a))}


def build_ensemble(target, eps: float, cfg: dict, seed: int, eot_iter: int) -> list[Spec]:
    """The attacks of the protocol, in the order they run (module docstring)."""
    from advlab.attacks import Transfer, presets
    common = dict(seed=seed, checks=False)
    backwards = tuple(target.backwards) if _is_purifier(target) else ("exact",)
    specs = [Spec("apgd-ce", b, presets.apgd_ce(eps, steps=cfg["apgd_steps"], eot_iter=eot_iter, **common))
             for b in backwards]
    specs += [Spec("apgd-dlr", b, presets.apgd_dlr(eps, steps=cfg["apgd_steps"], eot_iter=eot_iter, **common))
              for b in backwards]
    specs += [Spec("pgd-eot", b, presets.pgd_eot(eps, steps=cfg["pgd_steps"], eot_iter=eot_iter, **common))
              for b in backwards]
    specs.append(Spec("square", None, presets.square(eps, n_queries=cfg["square_queries"], **common)))
    if _is_purifier(target):
        specs.append(Spec("transfer", None, Transfer(presets.pgd(eps, steps=cfg["transfer_steps"], **common),
                                                     target.classifier)))
    if all(hasattr(target, a) for a in ("search", "lam", "beta", "k")):    # CMAP: its own attack (Zhang et al.)
        from advlab.evaluation.disruption import ConsistencyDisruption
        specs.append(Spec("consistency-disruption", None,
                          ConsistencyDisruption(eps, steps=cfg["disruption_steps"], **common)))
    return specs


class _FixedDraws(nn.Module):
    """model(x) with the defense's random stream restarted at `seed` before every call: the defense's
    randomness is frozen during the attack ("fixed" setting)."""

    def __init__(self, model: nn.Module, defense: nn.Module, seed: int):
        super().__init__()
        self.model, self.defense_ref, self.seed = model, [defense], seed   # a list: not a second submodule

    def forward(self, x):
        self.defense_ref[0].reseed(self.seed)
        return self.model(x)


def attacked_model(target, spec: Spec, fixed_seed: int | None = None) -> nn.Module:
    """What `spec.attack` runs on: defense.adaptive_model(backward), or the defense's own forward."""
    model = target.adaptive_model(spec.backward) if spec.backward and _is_purifier(target) else target
    return _FixedDraws(model, target, fixed_seed) if fixed_seed is not None else model


@torch.no_grad()
def judge(target, x: torch.Tensor, y: torch.Tensor, n_draws: int, seed: int) -> torch.Tensor:
    """Per image (N,) code: bit 0 = correct under majority vote of n_draws draws, bit 1 = correct on
    every draw (worst-of-N). A deterministic defense is run once (codes 0 or 3)."""
    from advlab.purifiers.voting import aggregate, worst_of_n
    if not getattr(target, "stochastic", False):
        ok = target(x).argmax(1) == y
        return ok.long() * 3
    if hasattr(target, "reseed"):
        target.reseed(seed)
    logits = torch.stack([target(x).float() for _ in range(n_draws)])          # (K, N, C)
    vote = aggregate(logits, "vote").argmax(1) == y
    return vote.long() + 2 * worst_of_n(logits, y).long()


# ----------------------------------------------------------------------------- one chunk


def run_chunk(target, x, y, start: int, plan: dict, bar=None) -> dict:
    """Every attack of the plan on one chunk x (m, C, H, W); per image and attack a code: -1 not
    attacked, else `judge`'s code of the attack's image. Depends only on (x, y, start, plan)."""
    seed, m = plan["seed"], len(x)
    clean = judge(target, x, y, plan["n_draws"], _seed(seed, start, "clean"))
    out = {"n": m, "clean": clean.tolist(), "codes": {}, "seconds": {}}
    for setting, specs in plan["specs"].items():
        alive = clean & 1 > 0                                                    # (m,) vote-correct so far
        codes, secs = {}, {}
        for spec in specs:
            t0, c = time.perf_counter(), torch.full((m,), -1, dtype=torch.long, device=x.device)
            idx = ((clean & 1 > 0) if plan["individual"] else alive).nonzero().squeeze(1)
            if bar is not None:
                bar.set_postfix_str(f"{setting} {spec.key} on {len(idx)}")
            if len(idx):
                s = _seed(seed, start, setting, spec.key, "attack")
                if hasattr(target, "reseed"):
                    target.reseed(s)
                model = attacked_model(target, spec, s if setting == "fixed" else None)
                x_adv = spec.attack(model, x[idx], y[idx])
                c[idx] = judge(target, x_adv, y[idx], plan["n_draws"], _seed(seed, start, setting, spec.key, "eval"))
                alive[idx] &= c[idx] & 1 > 0
            codes[spec.key], secs[spec.key] = c.tolist(), round(time.perf_counter() - t0, 3)
            if bar is not None:
                bar.update(m)
        out["codes"][setting], out["seconds"][setting] = codes, secs
    return out


# ----------------------------------------------------------------------------- aggregation

RULES = {"vote": 1, "worst_of_n": 2}


def _rate(k: int, n: int) -> dict:
    return {"acc": round(k / n, 6) if n else float("nan"), "robust": k, "n": n, "ci95": wilson(k, n)}


def summarize(chunks: dict, plan: dict, n: int) -> dict:
    """The per-image worst case of every (setting, rule) from the chunks' codes, the attack rows and
    the per-image attack that first broke each image."""
    starts = sorted(chunks, key=int)
    cat = lambda f: torch.tensor(sum((f(chunks[s]) for s in starts), []), dtype=torch.long)  # noqa: E731
    clean = cat(lambda c: c["clean"])                                              # (n,)
    settings, rows, total, all_codes = {}, [], {}, {}
    for setting, specs in plan["specs"].items():
        codes = {sp.key: cat(lambda c: c["codes"][setting][sp.key]) for sp in specs}
        all_codes[setting] = {k: v.tolist() for k, v in codes.items()}
        secs = {sp.key: sum(chunks[s]["seconds"][setting][sp.key] for s in starts) for sp in specs}
        per_rule = {}
        for rule, bit in RULES.items():
            ok = clean & bit > 0
            first = ["clean" if not o else None for o in ok.tolist()]
            for sp in specs:
                c = codes[sp.key]
                survived = (c < 0) | (c & bit > 0)
                for i in (ok & ~survived).nonzero().squeeze(1).tolist():
                    first[i] = sp.key
                ok = ok & survived
            total[(setting, rule)] = ok
            won = {sp.key: first.count(sp.key) for sp in specs}
            per_rule[rule] = _rate(int(ok.sum()), n) | {"won": {k: v for k, v in won.items() if v},
                                                        "first_broken_by": first}
        settings[setting] = per_rule
        for sp in specs:
            c = codes[sp.key]
            row = {"setting": setting, "key": sp.key, "name": sp.name, "backward": sp.backward,
                   "attack": repr(sp.attack), "settings": sp.settings(), "n": n, "seed": plan["seed"],
                   "attacked": int((c >= 0).sum()), "seconds": round(secs[sp.key], 2),
                   "broke_first": {r: settings[setting][r]["won"].get(sp.key, 0) for r in RULES}}
            if plan["individual"]:
                row["own"] = {r: _rate(int(((clean & b > 0) & (c >= 0) & (c & b > 0)).sum()), n) for r, b in RULES.items()}
            rows.append(row)
    res = {"clean": {r: _rate(int((clean & b > 0).sum()), n) for r, b in RULES.items()}, "settings": settings,
           "attacks": rows, "per_image": {"codes": "-1 not attacked; bit 0 vote correct, bit 1 all draws correct",
                                          "clean": clean.tolist(), **all_codes}}
    if len(plan["specs"]) > 1:   # per image, the worst case over the randomness settings as well
        res["combined"] = {r: _rate(int(torch.stack([total[(s, r)] for s in plan["specs"]]).all(0).sum()), n)
                           for r in RULES}
    return res


def strongest(summary: dict, plan: dict) -> dict:
    """The strongest single attack: lowest own accuracy (individual=True), else most first breaks."""
    rows = [r for r in summary["attacks"] if r["setting"] == next(iter(plan["specs"]))]
    if plan["individual"]:
        best = min(rows, key=lambda r: r["own"]["vote"]["acc"])
        return {"attack": best["key"], "backward": best["backward"], "by": "own robust accuracy",
                "acc": best["own"]["vote"]["acc"]}
    best = max(rows, key=lambda r: r["broke_first"]["vote"])
    return {"attack": best["key"], "backward": best["backward"], "by": "most images broken first",
            "images": best["broke_first"]["vote"]}


def headline(summary: dict, stochastic: bool, n_draws: int) -> dict:
    """The number a user should quote: the lowest honest one, and what it is."""
    if not stochastic:
        s = summary["settings"]["none"]["vote"]
        what = "per-image worst case over the ensemble"
    elif "combined" in summary:
        s = summary["combined"]["worst_of_n"]
        what = (f"per-image worst case over the ensemble and both randomness settings (fresh, fixed), "
                f"worst-of-{n_draws} (an attacker may resubmit)")
    else:
        setting = next(iter(summary["settings"]))
        s = summary["settings"][setting]["worst_of_n"]
        what = f"per-image worst case over the ensemble ({setting} randomness), worst-of-{n_draws}"
    return {k: s[k] for k in ("acc", "robust", "n", "ci95")} | {"what": what, "interval": "Wilson score, 95%"}


def robust_per_image(result: dict) -> list[bool]:
    """Per image of a result (or a record's "result"): robust under the headline's rule. Deterministic: correct
    after every attack; stochastic: correct on every draw after every attack, in every randomness setting run
    (or the first one when only one ran), as `headline` counts them. From result["per_image"]."""
    pi = result["per_image"]
    clean = torch.tensor(pi["clean"], dtype=torch.long)
    if not result["stochastic"]:
        settings, bit = ["none"], RULES["vote"]
    else:
        settings, bit = list(result["settings"]), RULES["worst_of_n"]
        if "combined" not in result:
            settings = settings[:1]
    ok = clean & bit > 0
    for s in settings:
        for codes in pi[s].values():
            c = torch.tensor(codes, dtype=torch.long)
            ok &= (c < 0) | (c & bit > 0)
    return ok.tolist()


def paired_comparison(a: dict, b: dict) -> dict:
    """Two results (or records' "result") on the same images, image by image: how many are robust under both,
    under a only, under b only, under neither, and the exact McNemar p-value of the difference
    (metrics.mcnemar_exact). ValueError when the two are not on the same subset of images."""
    from advlab.metrics import mcnemar_exact
    if a.get("subset") != b.get("subset") or a["n"] != b["n"]:
        raise ValueError(f"b: not on a's images (a: {a.get('subset')}, n {a['n']}; b: {b.get('subset')}, n {b['n']})")
    ra, rb = robust_per_image(a), robust_per_image(b)
    both = sum(x and y for x, y in zip(ra, rb))
    a_only, b_only = sum(ra) - both, sum(rb) - both
    return {"n": a["n"], "both": both, "a_only": a_only, "b_only": b_only, "neither": a["n"] - both - a_only - b_only,
            "p_value": mcnemar_exact(a_only, b_only), "test": "exact McNemar, two-sided"}


# ----------------------------------------------------------------------------- sanity and masking


def _grad_stats(target, model, x, y, seed: int) -> dict:
    """Per-image input gradients of the cross-entropy at x: how many are zero, non-finite, exploding."""
    from advlab.evaluation.masking import input_gradient_stats
    if hasattr(target, "reseed"):
        target.reseed(seed)
    s = input_gradient_stats(model, x, y)
    return s | {"ok": s["zero"] <= len(x) // 2 and s["exploding"] == 0}


def _acc(target, model, atk, x, y, n_draws, seed) -> float:
    if hasattr(target, "reseed"):
        target.reseed(seed)
    return float((judge(target, atk(model, x, y), y, n_draws, seed + 1) & 1 > 0).float().mean())


def sanity_checks(target, x, y, plan: dict, summary: dict, margin: float = 0.1, masking_margin: float = 0.02) -> dict:
    """The checks of the module docstring, on the first plan["sanity_n"] images (rank 0 only)."""
    from advlab.attacks import presets
    from advlab.attacks.pgd import PGD
    cfg, seed, n = plan["cfg"], plan["seed"], summary["clean"]["vote"]["n"]
    xs, ys = x[:plan["sanity_n"]], y[:plan["sanity_n"]]
    with torch.no_grad():
        num_classes = target(xs[:1]).shape[1]
    best = strongest(summary, plan)
    b = best["backward"] or (target.backwards[0] if _is_purifier(target) else "exact")
    model = attacked_model(target, Spec("sweep", b, None))
    backwards = tuple(target.backwards) if _is_purifier(target) else ("exact",)
    grads = {bw: _grad_stats(target, attacked_model(target, Spec("g", bw, None)), xs, ys, _seed(seed, "grad", bw))
             for bw in backwards}
    curve = []
    for e in sorted({plan["eps"], *cfg["sanity_eps"]}):
        atk = PGD(eps=e, alpha=2.5 * e / cfg["sanity_steps"], steps=cfg["sanity_steps"], random_start=False,
                  eot_iter=plan["eot_iter"], seed=seed, checks=False)
        curve.append({"eps": e, "acc": _acc(target, model, atk, xs, ys, plan["n_draws"], _seed(seed, "sweep", e)),
                      "n": len(xs), "attack": repr(atk), "backward": b})
    threshold = 1 / num_classes + margin
    short, long_ = (presets.pgd_eot(plan["eps"], steps=s, eot_iter=plan["eot_iter"], seed=seed, checks=False)
                    for s in cfg["mono_steps"])
    a_short = _acc(target, model, short, xs, ys, plan["n_draws"], _seed(seed, "mono"))
    a_long = _acc(target, model, long_, xs, ys, plan["n_draws"], _seed(seed, "mono"))
    tol = max(1 / len(xs), 0.05 if getattr(target, "stochastic", False) else 0.0)
    first = next(iter(plan["specs"]))
    won = summary["settings"][first]["vote"]["won"]
    masking = {}
    for name in ("square", "transfer"):
        if not any(r["key"] == name for r in summary["attacks"]):
            continue
        if plan["individual"]:
            rows = [r for r in summary["attacks"] if r["setting"] == first]
            white = min(r["own"]["vote"]["acc"] for r in rows if r["backward"])
            own = next(r for r in rows if r["key"] == name)["own"]["vote"]["acc"]
            masking[name] = {"beats_white_box": own < white - masking_margin, "own_acc": own, "best_white_box_acc": white}
        else:
            k = won.get(name, 0)
            masking[name] = {"beats_white_box": k > max(1, masking_margin * n), "broke_after_white_box": k}
    checks = {
        "large_eps": {"eps": curve[-1]["eps"], "acc": curve[-1]["acc"], "threshold": threshold,
                      "passed": curve[-1]["acc"] <= threshold},
        "masking": masking, "gradients": grads,
        "more_steps": {"steps": list(cfg["mono_steps"]), "acc": [a_short, a_long], "tolerance": tol,
                       "passed": a_long <= a_short + tol},
    }
    msgs = []
    if not checks["large_eps"]["passed"]:
        msgs.append(f"accuracy {curve[-1]['acc']:.1%} at eps {curve[-1]['eps']:g} stays above chance + margin "
                    f"({threshold:.1%}): the attacks do not see the defense; every number is an overestimate")
    for name, m in masking.items():
        if m["beats_white_box"]:
            msgs.append(f"{name} beats the white-box attacks: gradient masking suspected")
    for bw, g in grads.items():
        if not g["ok"]:
            msgs.append(f"backward {bw}: {g['zero']} zero and {g['exploding']} exploding/non-finite input "
                        f"gradients of {g['n']}")
    if not checks["more_steps"]["passed"]:
        msgs.append(f"PGD with {cfg['mono_steps'][1]} steps leaves more images correct ({a_long:.1%}) than with "
                    f"{cfg['mono_steps'][0]} ({a_short:.1%}): the attack has not converged")
    grads_ok = grads[b]["ok"]
    checks |= {"backward": b, "eps_curve": curve, "messages": msgs,
               "passed": checks["large_eps"]["passed"] and checks["more_steps"]["passed"] and grads_ok
               and not any(m["beats_white_box"] for m in masking.values())}
    return checks


# ----------------------------------------------------------------------------- the evaluation


def _fingerprint_module(m: nn.Module) -> str:
    from advlab.evaluation.adversarial_set import fingerprint
    return fingerprint(*(t.reshape(-1) for t in m.state_dict().values())) if len(m.state_dict()) else "none"


def adaptive_evaluation(target: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float = 0.1,
                        profile: str = "quick", device=None, eot_iter: int | None = None, seed: int = 0, *,
                        n_draws: int | None = None, randomness=None, individual: bool = False,
                        chunk: int | None = None, sanity_n: int | None = None, full_gradient_n: int = 0,
                        speed_n: int = 64, state_dir: str | None = shard.DEFAULT_FOLDER, resume: bool = True,
                        progress: bool = True, on_chunk=None, saved_only: bool = False) -> dict | None:
    """Run the protocol of the module docstring on (x, y) and return its result (json-serialisable).

    target: a Purifier (uses .backwards, .adaptive_model(b), .classifier, .stochastic, .reseed) or a
    plain classifier. profile: "quick" | "full" (PROFILES); eot_iter (None: the profile's for a
    stochastic defense, 1 otherwise) and n_draws override it. randomness: settings to run for a
    stochastic defense, ("fresh", "fixed") by default. individual: every attack on every clean-correct
    image (its own accuracy) instead of AutoAttack's cascade. state_dir: where chunks are saved (None:
    nowhere); resume=False recomputes them. full_gradient_n: APGD through `UnrolledSearch` on that many
    images (Defense-GAN-like defenses). speed_n: images timed for the throughput (0: none).
    on_chunk(start, data) is called after each saved chunk. The defense's random stream is restored.
    saved_only: run nothing and return `saved_progress`'s report of the chunks already in state_dir.
    Under torchrun every rank must call this; all ranks return the result.
    """
    from tqdm.auto import tqdm
    from advlab.validate import check_fit, eval_mode
    if profile not in PROFILES:
        raise ValueError(f"profile: must be one of {tuple(PROFILES)}, got {profile!r}")
    cfg = dict(PROFILES[profile])
    searches = (("generator", "restarts", "lr", "_generator"), ("generator", "iters", "k", "lr", "_generator"))
    if full_gradient_n and not any(all(hasattr(target, a) for a in attrs) for attrs in searches):
        raise ValueError("full_gradient_n: needs a defense with a latent search (Defense-GAN, CMAP), got "
                         f"{type(target).__name__}")
    if device is not None:
        target = target.to(device)
    x, y = check_fit(target.classifier if _is_purifier(target) else target, x, y)
    stochastic = bool(getattr(target, "stochastic", False))
    eot = (cfg["eot_iter"] if stochastic else 1) if eot_iter is None else eot_iter
    settings = (tuple(randomness or ("fresh", "fixed")) if stochastic else ("none",))
    plan = {"eps": float(eps), "seed": seed, "cfg": cfg, "profile": profile, "eot_iter": eot, "individual": individual,
            "n_draws": (n_draws or cfg["n_draws"]) if stochastic else 1, "sanity_n": sanity_n or cfg["sanity_n"],
            "full_gradient_n": full_gradient_n,
            "specs": {s: build_ensemble(target, eps, cfg, seed, 1 if s == "fixed" else eot) for s in settings}}
    name = target.describe() if hasattr(target, "describe") else type(target).__name__
    from advlab.evaluation.adversarial_set import fingerprint
    # The store's key leaves out the images: each chunk's file names its start and its own images, so a
    # run on the first n images of a subset reuses the chunks of a longer run on it (and the reverse).
    key = {"target": name, "weights": _fingerprint_module(target), "seed": seed, "chunk": chunk or cfg["chunk"],
           "n_draws": plan["n_draws"], "individual": individual,
           "attacks": {s: [repr(sp.attack) + f"@{sp.backward}" for sp in v] for s, v in plan["specs"].items()}}
    store = shard.ChunkStore(state_dir, key, name.split("(")[0]) if state_dir else None
    rank, world = shard.world()
    step = chunk or cfg["chunk"]
    mine = shard.my_chunks(list(range(0, len(x), step)), rank, world)
    file_of = {s: f"{s}_{fingerprint(x[s:s + step], y[s:s + step])}" for s in mine}   # chunk start -> its file
    if saved_only:
        if store is None or world > 1:
            raise ValueError("saved_only: needs a state_dir and a single process")
        return saved_progress(x, plan, store, file_of, name, stochastic)
    saved_state = target._generator.get_state() if hasattr(target, "_generator") else None
    t0, done = time.time(), {}
    units = sum(len(v) for v in plan["specs"].values())
    with eval_mode(target):
        bar = tqdm(total=sum(len(x[s:s + step]) for s in mine) * units, unit="img", disable=not progress,
                   desc=f"adaptive {name.split('(')[0]}" + (f" rank {rank}/{world}" if world > 1 else ""))
        for s in mine:
            data = store.load(file_of[s]) if store and resume else None
            if data is None:
                data = run_chunk(target, x[s:s + step], y[s:s + step], s, plan, bar)
                if store:
                    store.save(file_of[s], data)
                    from advlab.zoo import atomic
                    atomic.pause_point("adaptive:chunk-saved")
            else:
                bar.update(data["n"] * units)
            done[s] = data
            if on_chunk is not None:
                on_chunk(s, data)
        bar.close()
        merged = shard.gather({str(s): d for s, d in done.items()})
        res = None
        if rank == 0:
            res = _finish(target, x, y, plan, merged, store, resume, name, stochastic, speed_n)
            res["seconds"] = round(time.time() - t0, 1)
    if saved_state is not None:
        target._generator.set_state(saved_state)
    return shard.broadcast(res)


def saved_progress(x, plan, store, file_of, name, stochastic) -> dict:
    """A long run part way: the worst case over the chunks saved so far from image 0 on (the longest
    unbroken run of them), with its Wilson interval. No checks and no throughput: a progress report of a
    run that is still going, never a record (the sanity check has not run)."""
    done = {}
    for s in sorted(file_of):
        data = store.load(file_of[s])
        if data is None:
            break
        done[str(s)] = data
    n_done = sum(d["n"] for d in done.values())
    res = {"kind": "adaptive_progress", "target": name, "n": len(x), "n_done": n_done, "chunks": len(file_of),
           "chunks_done": len(done), "chunks_saved": sum(store.load(f) is not None for f in file_of.values()),
           "seed": plan["seed"], "profile": plan["profile"], "eps": plan["eps"], "store": str(store.path)}
    if n_done:
        summary = summarize(done, plan, n_done)
        res |= {"clean": summary["clean"], "headline": headline(summary, stochastic, plan["n_draws"]),
                "strongest": strongest(summary, plan),
                "seconds": round(sum(sum(v.values()) for d in done.values() for v in d["seconds"].values()), 1)}
    return res


def format_progress(res: dict) -> str:
    """saved_progress's report in a few lines."""
    head = (f"{res['target'].split('(')[0]}: {res['n_done']} of {res['n']} images done (the first {res['chunks_done']} "
            f"of {res['chunks']} chunks; {res['chunks_saved']} saved in all), seed {res['seed']}, profile {res['profile']}, "
            f"Linf eps {res['eps']:g}; {res['store']}")
    if not res["n_done"]:
        return head + "\nnothing to report yet"
    h, c = res["headline"], res["clean"]["vote"]
    return "\n".join([head, f"clean so far: {100 * c['acc']:.1f}% [{100 * c['ci95'][0]:.1f}, {100 * c['ci95'][1]:.1f}]",
                      f"worst case so far: {100 * h['acc']:.1f}% [{100 * h['ci95'][0]:.1f}, {100 * h['ci95'][1]:.1f}] "
                      f"({h['robust']} of {h['n']}; {h['what']}); strongest so far: {res['strongest']['attack']}",
                      f"attack time in the saved chunks: {res['seconds']:.0f} s",
                      "a progress report: the sanity check has not run, so this is not a result to quote as final"])


def _finish(target, x, y, plan, merged, store, resume, name, stochastic, speed_n) -> dict:
    """Rank 0: aggregate the chunks, run (or reload) the checks, measure the throughput."""
    summary = summarize(merged, plan, len(x))
    from advlab.evaluation.adversarial_set import fingerprint
    label = f"checks_s{plan['sanity_n']}_f{plan['full_gradient_n']}_{fingerprint(x, y)}"   # they depend on all n images
    cached = store.load(label) if store and resume else None
    if cached is None:
        cached = {"sanity": sanity_checks(target, x, y, plan, summary)}
        if plan["full_gradient_n"]:
            cached["full_gradient"] = full_gradient_attack(target, x, y, plan, summary)
        if store:
            store.save(label, cached)
    res = {"kind": "adaptive_evaluation", "target": name, "classifier": type(getattr(target, "classifier", target)).__name__,
           "stochastic": stochastic, "eps": plan["eps"], "norm": "linf", "profile": plan["profile"], "n": len(x),
           "seed": plan["seed"], "eot_iter": plan["eot_iter"], "n_draws": plan["n_draws"],
           "mode": "individual" if plan["individual"] else "cascade", "device": device_name(x.device),
           "settings_run": list(plan["specs"]), "headline": headline(summary, stochastic, plan["n_draws"]),
           "strongest": strongest(summary, plan)} | summary | cached
    if speed_n:
        xs = x[:speed_n]
        with torch.no_grad():
            target(xs[:2])
            t = time.perf_counter()
            target(xs)
            res["purify_images_per_s"] = round(len(xs) / max(time.perf_counter() - t, 1e-9), 1)
            res["purify_speed_n"] = len(xs)
    return res


def format_result(res: dict) -> str:
    """The result as markdown: the headline, every attack row, the winners and the checks."""
    pct = lambda r: f"{100 * r['acc']:.1f}% [{100 * r['ci95'][0]:.1f}, {100 * r['ci95'][1]:.1f}]"  # noqa: E731
    h = res["headline"]
    lines = [f"**{res['target']}**, Linf eps {res['eps']:g}, {res['n']} images (seed {res['seed']}), profile "
             f"{res['profile']}, {res['mode']}, {res['device']}", "",
             f"clean: {pct(res['clean']['vote'])}" + (f"; worst-of-{res['n_draws']} {pct(res['clean']['worst_of_n'])}"
                                                     if res["stochastic"] else ""),
             f"**robust (quote this): {pct(h)}** - {h['what']} ({h['interval']})", ""]
    for setting, rules in res["settings"].items():
        for rule in (("vote", "worst_of_n") if res["stochastic"] else ("vote",)):
            lines.append(f"- worst case, randomness {setting}, {rule}: {pct(rules[rule])}; first broken by: "
                         + ", ".join(f"{k} {v}" for k, v in rules[rule]["won"].items()))
    for rule, r in res.get("combined", {}).items():
        lines.append(f"- worst case over both randomness settings, {rule}: {pct(r)}")
    own = res["mode"] == "individual"
    lines += ["", "| randomness | attack | attacked | broke first | " + ("own accuracy | " if own else "")
              + "seconds | settings |", "|---|---|---:|---:|" + ("---:|" if own else "") + "---:|---|"]
    for r in res["attacks"]:
        lines.append(f"| {r['setting']} | {r['key']} | {r['attacked']} | {r['broke_first']['vote']} | "
                     + (f"{pct(r['own']['vote'])} | " if own else "") + f"{r['seconds']:.1f} | `{r['attack']}` |")
    s = res["sanity"]
    lines += ["", f"strongest attack: {res['strongest']['attack']} ({res['strongest']['by']})",
              f"sanity ({'passed' if s['passed'] else 'FAILED'}, backward {s['backward']}): "
              + ", ".join(f"eps {c['eps']:g} -> {100 * c['acc']:.1f}%" for c in s["eps_curve"])
              + f" (n {s['eps_curve'][0]['n']}, threshold {100 * s['large_eps']['threshold']:.0f}%); PGD "
              f"{s['more_steps']['steps'][0]} / {s['more_steps']['steps'][1]} steps: "
              f"{100 * s['more_steps']['acc'][0]:.1f}% / {100 * s['more_steps']['acc'][1]:.1f}%; zero gradients: "
              + ", ".join(f"{b} {g['zero']}/{g['n']}" for b, g in s["gradients"].items())]
    lines += [f"- {m}" for m in s["messages"]]
    if "full_gradient" in res:
        f = res["full_gradient"]
        lines.append(f"full gradient ({f['backward']}) on {f['n']}: alone {pct(f['own'])}, with the ensemble "
                     f"{pct(f['worst_case_on_subset'])}")
    if "purify_images_per_s" in res:
        lines.append(f"throughput: {res['purify_images_per_s']:.0f} images/s ({res['device']})")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- command line


def load_target(name: str, dataset: str = "fashion_mnist", classifier: str | None = None, device="cpu",
                settings: dict | None = None):
    """(target, record name, {zoo name: sha256}): a registered purifier built from the zoo (record
    name "lqvae+fmnist/cnn"; `settings` go to its constructor, e.g. {"alphas": "cosine", "scale": 0.7})
    or a zoo classifier (record name "fmnist/pgd-at")."""
    from advlab import purifiers, zoo
    if name in purifiers.REGISTRY:
        cls = purifiers.get(name)
        parts = dict(cls.ZOO[dataset])
        clf = classifier or parts.pop("classifier")
        parts.pop("classifier", None)
        import inspect
        known = [k for k in inspect.signature(cls.__init__).parameters if k not in ("self", "classifier", *parts)]
        unknown = sorted(set(settings or {}) - set(known))
        if unknown:
            raise ValueError(f"settings: {unknown} are not settings of {cls.__name__}; it takes {known}")
        target = cls.from_zoo(dataset, classifier=clf, device=device, **(settings or {}))
        models = {z: zoo.info(z)["sha256"] for z in [*parts.values(), clf]}
        return target, f"{name}+{clf}", models
    if name not in zoo.names():
        raise ValueError(f"name: {name!r} is neither a purifier {purifiers.names()} nor a zoo model {zoo.names()}")
    if settings:
        raise ValueError(f"settings: {sorted(settings)} given for the zoo classifier {name!r}; only a purifier takes them")
    return zoo.load(name, device=device), name, {name: zoo.info(name)["sha256"]}


def main(argv=None) -> int:
    """`advlab adaptive NAME --n 1000 --profile full --device cuda --record` (also under torchrun)."""
    import argparse
    import os
    import sys
    from pathlib import Path
    p = argparse.ArgumentParser(prog="advlab adaptive", description=__doc__.split("\n\n")[0])
    p.add_argument("name", help="a registered purifier (lqvae, vaegan, defense-gan, ...) or a zoo classifier")
    for flag, typ, default, hlp in (
            ("--dataset", str, "fashion_mnist", None), ("--classifier", str, None, "the purifier's zoo classifier"),
            ("--n", int, 64, "test images (a fixed subset drawn with --seed); --images under torchrun, whose "
                               "own parser takes --n for an ambiguous prefix of its options"), ("--seed", int, 0, None),
            ("--eps", float, 0.1, None), ("--device", str, "cpu", None), ("--eot", int, None, None),
            ("--draws", int, None, "draws per judgement (stochastic)"), ("--chunk", int, None, None),
            ("--randomness", str, None, "comma list of fresh,fixed"), ("--sanity-n", int, None, None),
            ("--full-gradient-n", int, 0, "APGD through the unrolled search (Defense-GAN)"),
            ("--threads", int, 0, None), ("--state", str, shard.DEFAULT_FOLDER, "resume folder"),
            ("--out", str, None, "write the result's .json and .md here")):
        p.add_argument(*((flag, "--images") if flag == "--n" else (flag,)), dest=flag[2:].replace("-", "_"),
                       type=typ, default=default, help=hlp)
    p.add_argument("--profile", choices=tuple(PROFILES), default="quick")
    p.add_argument("--individual", action="store_true", help="every attack on every image (own accuracies)")
    p.add_argument("--no-resume", action="store_true")
    p.add_argument("--saved", action="store_true",
                   help="run nothing: report the worst case over the chunks a longer run has saved so far")
    p.add_argument("--record", action="store_true", help="write docs/results/records/NAME/adaptive_*.json")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting of the purifier (json value), e.g. --set alphas='\"cosine\"' --set scale=0.7")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    from advlab import data
    device = a.device
    if device.startswith("cuda") and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    rank, _ = shard.init(device)
    from advlab.training.zoo_entry import parse_setting
    target, rec_name, models = load_target(a.name, a.dataset, a.classifier, device,
                                           dict(parse_setting(t) for t in a.set))
    x, y = data.batch(a.dataset, "test", n=a.n, seed=a.seed, device=device)
    if a.saved:
        if a.record or a.out:
            p.error("argument --saved: a progress report is never recorded (drop --record and --out)")
        print(format_progress(adaptive_evaluation(target, x, y, a.eps, a.profile, device, a.eot, a.seed, n_draws=a.draws,
                                                  randomness=a.randomness.split(",") if a.randomness else None,
                                                  individual=a.individual, chunk=a.chunk, state_dir=a.state,
                                                  progress=False, saved_only=True)))
        return 0
    res = adaptive_evaluation(target, x, y, a.eps, a.profile, device, a.eot, a.seed, n_draws=a.draws,
                              randomness=a.randomness.split(",") if a.randomness else None, individual=a.individual,
                              chunk=a.chunk, sanity_n=a.sanity_n, full_gradient_n=a.full_gradient_n,
                              state_dir=a.state, resume=not a.no_resume, progress=rank == 0)
    if rank != 0:
        return 0
    res["command"] = "advlab adaptive " + " ".join(argv if argv is not None else sys.argv[1:])
    res["subset"] = {"dataset": a.dataset, "split": "test", "n": a.n, "seed": a.seed}
    print(format_result(res))
    protocol = f"adaptive_{a.profile}_linf{a.eps:g}"
    record = None
    if a.record:
        from advlab.evaluation import records
        record = records.record_path(rec_name, protocol)
    if a.out:   # with --record the json is the record's "result" (per image too): the .md alone points to it
        from advlab.zoo import atomic
        stem = Path(a.out) / f"{rec_name.replace('/', '__')}_{protocol}_n{a.n}_seed{a.seed}"
        if record is None:
            atomic.write_json(f"{stem}.json", res)
        where = "" if record is None else f"\nThe whole result, per image included: the record {_shown(record)}.\n"
        atomic.write_text(f"{stem}.md", format_result(res) + "\n" + where)
    if a.record:
        records.write_record("defense" if _is_purifier(target) else "model", rec_name, protocol, res,
                             attack="adaptive ensemble: " + ", ".join(r["key"] for r in res["attacks"]
                                                                      if r["setting"] == res["settings_run"][0]),
                             n=a.n, seed=a.seed, device=res["device"], models=models, command=res["command"])
    return 0


def _shown(path) -> str:
    """path relative to the working directory when it lies below it (docs/results/records/...), else as is."""
    from pathlib import Path
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    raise SystemExit(main())
