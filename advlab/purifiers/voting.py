"""K stochastic draws -> one decision, and the differentiable model an adaptive attacker should use.

A stochastic purifier (sampled latents, random restarts) gives a different reconstruction on each
call. Two published ways to turn K draws into one prediction:
  vote    majority vote over the K predicted labels, ties broken by the summed logits (CMAP);
  carso   p_c proportional to exp(sum_j exp(l_jc)): each draw's logits exponentiated and summed
          (CARSO's robust aggregation); computed as exp(logsumexp_j l_jc) in float64, so large
          logits do not overflow.
and two plain ones, mean_logits and mean_probs (the log of the mean softmax).

A vote is piecewise constant in the input (zero gradient almost everywhere), so an attacker
differentiates a smooth stand-in instead: `Voting.adaptive_model()` averages the K draws' softmax
probabilities (the EoT expectation), which is what randomised AutoAttack and PGD with EoT do.

    defense = Voting(lambda x: classifier(purifier.sample(x)), k=8, rule="vote")
    labels = defense(x).argmax(1)                  # (N,)
    x_adv = attack(defense.adaptive_model(), x, y)
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn

from advlab.validate import check_fit, check_images, check_positive

RULES = ("vote", "carso", "mean_logits", "mean_probs")


def aggregate(logits: torch.Tensor, rule: str = "vote") -> torch.Tensor:
    """Per-class scores (N, C) from K draws' logits (K, N, C); argmax of the scores is the decision.

    vote: label counts plus a tie-break below one vote (the summed logits, squashed into (0, 0.5)).
    carso: the log of CARSO's p_c, from exp(logsumexp_j l_jc) in float64 (clamped where it would overflow).
    mean_logits: the mean logit. mean_probs: log of the mean softmax probability.
    Scores are float32 (half-precision logits are upcast), float64 for float64 logits (gradient checks).
    """
    if rule not in RULES:
        raise ValueError(f"rule: must be one of {RULES}, got {rule!r}")
    if not torch.is_tensor(logits) or logits.dim() != 3 or logits.shape[0] < 1:
        raise ValueError(f"logits: expected a (K, N, C) tensor with K >= 1, got "
                         f"{tuple(logits.shape) if torch.is_tensor(logits) else type(logits).__name__}")
    z = logits if logits.dtype == torch.float64 else logits.float()
    if rule == "vote":
        k, _, c = z.shape
        counts = nn.functional.one_hot(z.argmax(2), c).sum(0).to(z.dtype)          # (N, C)
        tie = torch.sigmoid(z.sum(0) / k) * 0.5                                     # (N, C) in (0, 0.5)
        return counts + tie
    if rule == "carso":   # log p_c = S_c - logsumexp(S), S_c = exp(logsumexp_j l_jc), in float64
        s = torch.logsumexp(logits.double(), dim=0).clamp(max=700.0).exp()          # (N, C), < 1e304
        return torch.log_softmax(s, 1).clamp(min=-1e4).to(z.dtype)
    if rule == "mean_logits":
        return z.mean(0)
    return torch.logsumexp(torch.log_softmax(z, 2), dim=0) - math.log(z.shape[0])


def worst_of_n(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N,) bool: True where every one of the K draws classifies correctly - the decision rule that an
    attacker who may resubmit the same input faces."""
    return (logits.argmax(2) == y[None]).all(0)


class Voting(nn.Module):
    """An nn.Module from images to per-class scores: K calls of `draw` (images -> logits, random),
    aggregated by `rule`. `batched=True` makes one call on the K-fold repeated batch instead of K calls
    (faster on a GPU; needs a draw whose randomness is per row)."""

    def __init__(self, draw: Callable[[torch.Tensor], torch.Tensor], k: int = 8, rule: str = "vote",
                 batched: bool = False):
        super().__init__()
        if not callable(draw):
            raise ValueError(f"draw: expected a callable images -> logits, got {type(draw).__name__}")
        if rule not in RULES:
            raise ValueError(f"rule: must be one of {RULES}, got {rule!r}")
        self.draw = draw
        self.k = check_positive(k, "k", integer=True)
        self.rule = rule
        self.batched = bool(batched)

    def draws(self, x: torch.Tensor) -> torch.Tensor:
        """The K draws' logits, (K, N, C)."""
        if self.batched:
            out = self.draw(x.repeat(self.k, *([1] * (x.dim() - 1))))               # (K*N, C)
            return out.view(self.k, len(x), -1)
        return torch.stack([self.draw(x) for _ in range(self.k)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        owner = self.draw if isinstance(self.draw, nn.Module) else getattr(self.draw, "__self__", None)
        if isinstance(owner, nn.Module):   # a module (or its bound method) answers for the images it takes
            x, _ = check_fit(owner, x)
        else:
            check_images(x)
        return aggregate(self.draws(x), self.rule)

    def adaptive_model(self) -> "Voting":
        """The smooth stand-in to attack: the same draws, scored by the mean softmax probability."""
        return Voting(self.draw, self.k, "mean_probs", self.batched)

    def extra_repr(self) -> str:
        return f"k={self.k}, rule={self.rule!r}, batched={self.batched}"
