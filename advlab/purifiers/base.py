"""What every purifier shares: `Purifier` (alias `Defense`), an nn.Module from images in [0, 1] to logits.

    defense = defenses.DefenseGAN.from_zoo("fashion_mnist")   # generator + default classifier
    x_pure = defense.purify(x)            # (N, C, H, W) in [0, 1] -> same shape, in [0, 1]
    logits = defense(x)                   # = defense.classifier(defense.purify(x))
    model = defense.adaptive_model()      # what an adaptive (white-box) attacker attacks end to end

Threat model. The attacker knows everything (classifier, purifier, weights) except the defense's
random draws. Three evaluations follow (advlab.evaluate.defense_report):
  grey box  - the attack is crafted on `defense.classifier` alone, then the defense sees it;
  adaptive  - the attack runs end to end on `defense.adaptive_model()`: the defense itself when its
              forward pass gives useful gradients, else BPDA (Athalye et al. 2018) through the
              purifier's non-differentiable stage; with EoT when `defense.stochastic`.

Three kinds of purifier fit the same shape:
  deterministic      encode -> decode (LQ-VAE);                         stochastic=False
  stochastic         sampled latents (MLVGM, CARSO's decoder);          stochastic=True, uses `generator`
  optimisation-based an inner optimisation per input (Defense-GAN, CMAP); differentiable=False, BPDA

A subclass implements `_purify(x, generator)` and declares the class attributes below. A subclass
whose forward is not `classifier(purify(x))` (voting, logit aggregation) overrides `forward` and,
when it is not differentiable, `adaptive_model`.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from advlab.validate import check_fit


class Purifier(nn.Module):
    """Base class of purifiers: forward(x) = classifier(purify(x)), x in [0, 1], shape (N, C, H, W).

    Class attributes a subclass sets:
      stochastic      True when purify draws random numbers (an attacker then needs EoT).
      differentiable  True when autograd through forward gives the defense's real gradient. When
                      False the forward pass still returns logits connected to x, but with a zero
                      gradient (that is what autograd sees of a latent search or a quantiser):
                      attacking it naively is the classic broken evaluation, and the large-eps
                      sanity check of `defense_report` exists to catch it.
      backwards       the names `adaptive_model(backward=...)` accepts; the first is the default.
      ZOO             {dataset: {"classifier": zoo name, <constructor argument>: zoo name, ...}}.
    """

    stochastic: bool = False
    differentiable: bool = True
    backwards: tuple = ("exact", "identity")
    ZOO: dict = {}

    def __init__(self, classifier: nn.Module, seed: int | None = 0):
        super().__init__()
        if not isinstance(classifier, nn.Module):
            raise ValueError(f"classifier: expected an nn.Module mapping images to logits, got "
                             f"{type(classifier).__name__}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed: must be an int or None, got {seed!r}")
        self.classifier = classifier
        self.seed = seed
        self.reseed(seed)

    # ----------------------------------------------------------------------------- randomness
    def reseed(self, seed: int | None = None) -> None:
        """Restart the defense's own random stream (used when purify gets no `generator`)."""
        self._generator = torch.Generator()
        if seed is None:
            self._generator.seed()
        else:
            self._generator.manual_seed(seed)

    # ----------------------------------------------------------------------------- the defense
    def purify(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Purified images: (N, C, H, W) in [0, 1] -> (N, C, H, W) in [0, 1].

        x is checked against the classifier once (`validate.check_fit`): images of other channels or
        size raise ValueError naming `x`; float64 images become the classifier's dtype and move to
        its device (documented conversions, never errors).

        generator: a CPU torch.Generator for the random draws of a stochastic defense (default:
        the defense's own stream, seeded by `seed`); deterministic defenses ignore it.
        """
        x, _ = check_fit(self, x)     # images that fit the classifier; float64 -> its dtype, its device
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
        return self._purify(x, generator if generator is not None else self._generator)

    def _purify(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the classifier on the purified images, (N, num_classes)."""
        x, _ = check_fit(self, x)
        x_pure = self.purify(x)
        if not self.differentiable and torch.is_grad_enabled() and x.requires_grad:
            # keep the graph connected so that a naive attack runs (and sees the zero gradient
            # a non-differentiable purifier really has) instead of failing inside autograd
            x_pure = x_pure.detach() + 0.0 * x
        return self.classifier(x_pure)

    # ----------------------------------------------------------------------------- attacking it
    def adaptive_model(self, backward: str | Callable | None = None) -> nn.Module:
        """The nn.Module (images -> logits) an adaptive attacker should attack end to end.

        backward: None for the defense's default (`backwards[0]`);
          "exact"    the defense itself (autograd through purify);
          "identity" BPDA with an identity backward: forward = classifier(purify(x)),
                     gradient = the classifier's gradient at purify(x), as if purify were x -> x;
          a callable f(x) -> images: BPDA whose backward is the gradient of f at x;
          any other name in `backwards` is a subclass-specific approximation.
        The returned model's forward equals the defense's forward (same purified images).
        """
        from advlab.attacks.bpda import bpda_model
        backward = self.backwards[0] if backward is None else backward
        if callable(backward):
            return self._same_mode(bpda_model(self.purify, self.classifier, backward))
        if backward not in self.backwards:
            raise ValueError(f"backward: {type(self).__name__} offers {self.backwards} or a callable, "
                             f"got {backward!r}")
        if backward == "exact":
            return self
        if backward == "identity":
            return self._same_mode(bpda_model(self.purify, self.classifier))
        return self._same_mode(self._adaptive_model(backward))

    def _same_mode(self, wrapper: nn.Module) -> nn.Module:
        """Give the new wrapper modules the defense's train/eval flag, leaving the defense's own alone."""
        own = set(self.modules())
        for m in wrapper.modules():
            if m not in own:
                m.training = self.training
        return wrapper

    def _adaptive_model(self, backward: str) -> nn.Module:  # pragma: no cover - subclass options
        raise ValueError(f"backward: {backward!r} is not implemented by {type(self).__name__}")

    def describe(self) -> str:
        """A one-line name with the settings that change the defense, e.g. for reports."""
        settings = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({settings})"

    def settings(self) -> dict:
        """The hyper-parameters that define the defense (subclasses extend it)."""
        return {"seed": self.seed} if self.stochastic else {}

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def from_zoo(cls, dataset: str = "fashion_mnist", classifier: nn.Module | str | None = None,
                 device: str | torch.device = "cpu", **kwargs) -> "Purifier":
        """Build the defense from the zoo: its trained parts plus a classifier, in eval mode.

        classifier: None for the dataset's default zoo classifier, a zoo name, or an nn.Module.
        kwargs go to the constructor (e.g. steps=, restarts=, seed=). An untrained part raises
        zoo.NotTrainedError whose message gives the command that trains it.
        """
        from advlab import zoo
        if dataset not in cls.ZOO:
            raise ValueError(f"dataset: {cls.__name__} has zoo models for {sorted(cls.ZOO)}, got {dataset!r}")
        parts = dict(cls.ZOO[dataset])
        default_classifier = parts.pop("classifier")
        classifier = default_classifier if classifier is None else classifier
        if not isinstance(classifier, (str, nn.Module)):
            raise ValueError(f"classifier: expected None, a zoo name or an nn.Module, got {type(classifier).__name__}")
        built = {arg: zoo.load(name, device=device) for arg, name in parts.items()}  # the purifier first
        if isinstance(classifier, str):
            classifier = zoo.load(classifier, device=device)
        return cls(classifier=classifier, **built, **kwargs).to(device).eval()


Defense = Purifier   # the name lectures 04-06 use
