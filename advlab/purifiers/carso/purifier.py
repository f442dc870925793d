"""CARSO (Ballarin et al., "Carefully Blending Adversarial Training and Purification Improves Adversarial
Robustness"): an adversarially trained classifier plus a conditional VAE that maps the classifier's
internal representation of the (possibly attacked) input to a distribution of clean reconstructions;
N of them are classified and the N logit vectors aggregated robustly.

    defense = CARSO.from_zoo("fashion_mnist")      # classifier fmnist/pgd-at, CVAE fmnist/carso
    scores = defense(x)                            # (N, 10) log p_c of CARSO's aggregation; argmax decides
    x_pure = defense.purify(x)                     # one reconstruction per input (the first draw)
    draws = defense.sample(x, k=8)                 # (8, N, 1, 28, 28)

Inference on x (N, C, H, W) in [0, 1]:
  1. c = compress(classifier's conv activations on x)   (the classifier sees x itself)
  2. z_1..z_K ~ N(0, I), drawn one draw after the other from the defense's generator (seeded by `seed`)
  3. x'_j = decoder(z_j, c), all K in one batch; l_j = classifier(x'_j), (K, N, classes)
  4. scores = voting.aggregate(l, rule): CARSO's rule p_c proportional to exp(sum_j exp(l_jc)), returned
     as log p_c (computed in float64 through logsumexp; advlab.purifiers.voting).
K = n_samples = 8 by default (the paper's). `purify(x)` is step 3's first draw alone, for pictures;
the defense's decision is the aggregation of all K, which is what `forward` returns.

Threat model. The attacker knows both networks and their weights, not the draws z (stochastic=True:
attacks need EoT). The only path from x to the decision runs through the classifier's activations,
the compressors, the decoder and the classifier again, all differentiable, so `adaptive_model()`
("exact", the default) is the defense itself: autograd through condition, decoder, classifier and
the aggregation's own gradient. The aggregation is a double exponential: for an input the defense
classifies confidently the cross-entropy of its scores is saturated and its gradient can underflow
to zero in float64 (log p of the other classes below about -745; advlab.purifiers.voting clamps log p
at -1e4, which zeroes it too): with the zoo models, 77% of 64 test images get an all-zero input gradient
(docs/results/carso_fmnist_n1000_seed0.md). An attack that sees zero gradients there is not evidence of
robustness: use backward="mean_probs", whose forward pass is the defense's (same draws, same scores)
and whose gradient is that of the mean softmax over the K draws (the EoT expectation), or a margin
loss; the large-eps sanity check of `evaluate.defense_report` catches a masked gradient.
"mean_probs" attacks the same draws scored by the mean softmax (its forward value is that smooth
score, not CARSO's: a straight-through of CARSO's scores would keep the saturated outer gradient);
success is judged on the defense itself. A callable backward f gives BPDA per draw (each
reconstruction's Jacobian replaced by f's; the forward pass is the defense's).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from advlab.purifiers.base import Purifier
from advlab.purifiers.voting import RULES, aggregate
from advlab.validate import check_images, eval_mode


class CARSO(Purifier):
    """CARSO's defense: forward(x) = aggregate(classifier(decoder(z_j, c(x))) for j = 1..n_samples).

    cvae: a module with `condition(feats)`, `decode(z, c)`, `layers`, `condition_shapes` and
      `latent_dim`, e.g. advlab.purifiers.carso.model.CARSOModel (zoo fmnist/carso); it must have
      been trained on this classifier's representation.
    classifier: images in [0, 1] -> logits, with the sub-modules named in cvae.layers.
    n_samples: K, the reconstructions per input. rule: the aggregation (voting.RULES; "carso").
    seed: of the defense's own random stream (Purifier.reseed).
    """

    stochastic = True
    differentiable = True
    backwards = ("exact", "mean_probs")
    ZOO = {"fashion_mnist": {"classifier": "fmnist/pgd-at", "cvae": "fmnist/carso"}}

    def __init__(self, cvae: nn.Module, classifier: nn.Module, n_samples: int = 8, rule: str = "carso",
                 seed: int | None = 0):
        super().__init__(classifier, seed)
        if not isinstance(cvae, nn.Module) or not all(hasattr(cvae, a) for a in
                                                       ("condition", "decode", "layers", "condition_shapes", "latent_dim")):
            raise ValueError(f"cvae: expected a module with condition, decode, layers, condition_shapes and "
                             f"latent_dim (e.g. advlab.purifiers.carso.model.CARSOModel), got {type(cvae).__name__}")
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"n_samples: must be an int >= 1, got {n_samples!r}")
        if rule not in RULES:
            raise ValueError(f"rule: must be one of {RULES}, got {rule!r}")
        from advlab.purifiers.carso.model import feature_shapes
        try:
            shapes = feature_shapes(classifier, cvae.layers)
        except ValueError as e:
            raise ValueError(f"classifier: {e}") from None
        if [list(s) for s in shapes] != [list(s) for s in cvae.condition_shapes]:
            raise ValueError(f"classifier: its layers {list(cvae.layers)} give {shapes}, the CVAE was built "
                             f"for {cvae.condition_shapes}")
        self.cvae = cvae
        self.n_samples = n_samples
        self.rule = rule

    def settings(self) -> dict:
        return super().settings() | {"n_samples": self.n_samples, "rule": self.rule,
                                     "latent_dim": self.cvae.latent_dim}

    # ----------------------------------------------------------------------------- the pieces
    def condition(self, x: torch.Tensor) -> torch.Tensor:
        """The compressed representation (N, fc_repr) of the classifier's activations on x (with the
        gradient to x when autograd is on)."""
        from advlab.purifiers.carso.model import classifier_features
        feats, _ = classifier_features(self.classifier, x, self.cvae.layers)
        with eval_mode(self.cvae):
            return self.cvae.condition(feats)

    def sample(self, x: torch.Tensor, k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """k reconstructions per input, (k, N, C, H, W) in [0, 1] (k: n_samples by default). The latents
        are drawn one draw after the other, (N, latent_dim) each, from `generator` (default: the defense's
        own stream), so the first draw is the one `purify` returns from the same generator state."""
        check_images(x, "x")
        k = self.n_samples if k is None else k
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k: must be an int >= 1, got {k!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
        g = self._generator if generator is None else generator
        n, d = len(x), self.cvae.latent_dim
        c = self.condition(x)                                                            # (N, fc_repr)
        z = torch.stack([torch.randn(n, d, generator=g) for _ in range(k)]).to(c)       # (k, N, d)
        with eval_mode(self.cvae):
            out = self.cvae.decode(z.flatten(0, 1), c.repeat(k, 1))                      # (k * N, C, H, W)
        return out.view(k, n, *out.shape[1:]).to(x.dtype)

    def _purify(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.sample(x, 1, generator)[0]                                           # (N, C, H, W)

    def draw_logits(self, x: torch.Tensor, k: int | None = None, generator: torch.Generator | None = None
                    ) -> torch.Tensor:
        """The classifier's logits on k reconstructions of each input, (k, N, classes)."""
        rec = self.sample(x, k, generator)                                               # (k, N, C, H, W)
        return self.classifier(rec.flatten(0, 1)).view(rec.shape[0], rec.shape[1], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The aggregated scores (N, classes) of n_samples draws (log p_c for the "carso" rule)."""
        return aggregate(self.draw_logits(x), self.rule)

    # ----------------------------------------------------------------------------- attacking it
    def adaptive_model(self, backward=None) -> nn.Module:
        """The module an adaptive attacker attacks end to end (same draws as the defense).

        backward: None or "exact" (the defense itself), "mean_probs" (the same draws scored by the mean
        softmax: a smooth surrogate whose forward value is not CARSO's scores), or a callable f(x) -> images: BPDA per draw, each reconstruction's Jacobian
        replaced by f's (the draws are still classified and aggregated as in the defense).
        """
        if callable(backward) and not isinstance(backward, str):
            return self._same_mode(_BPDABackward(self, backward))
        return super().adaptive_model(backward)

    def _adaptive_model(self, backward: str) -> nn.Module:
        return _SmoothBackward(self)


class _SmoothBackward(nn.Module):
    """The defense's draws scored by the mean softmax, log((1/K) sum_j softmax(l_j)) (the EoT expectation),
    as voting.Voting.adaptive_model does. Not a straight-through of CARSO's scores: a loss evaluated at
    CARSO's saturated scores has a vanishing outer gradient (softmax(scores) - onehot(y) = 0 in float32 for
    a confidently classified input), whatever gradient is routed behind it. The decision stays the
    defense's: attacks are judged on the defense itself (evaluate.defense_report classifies by `defense`)."""

    def __init__(self, defense: CARSO):
        super().__init__()
        self.defense = defense

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return aggregate(self.defense.draw_logits(x), "mean_probs")                     # (N, classes)

    def extra_repr(self) -> str:
        return "backward='mean_probs'"


class _BPDABackward(nn.Module):
    """The defense's forward pass with BPDA through the purifier: every draw's reconstruction keeps its
    value, its gradient is that of f(x) (advlab.attacks.BPDA on the K draws at once)."""

    def __init__(self, defense: CARSO, f):
        super().__init__()
        from advlab.attacks.bpda import BPDA
        self.defense = defense
        k = defense.n_samples
        self.bpda = BPDA(lambda x: defense.sample(x).flatten(0, 1),                       # (K * N, C, H, W)
                         lambda x: f(x).repeat(k, *([1] * (x.dim() - 1))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rec = self.bpda(x)                                                               # (K * N, C, H, W)
        logits = self.defense.classifier(rec).view(self.defense.n_samples, len(x), -1)
        return aggregate(logits, self.defense.rule)
