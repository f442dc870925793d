"""CARSO's purifier: a conditional VAE whose condition is the classifier's own internal representation
of its (possibly attacked) input (Ballarin et al., "Carefully Blending Adversarial Training and
Purification Improves Adversarial Robustness"), sized for the zoo's SmallCNN on 28x28 grey images.

    feats, logits = classifier_features(classifier, x, SMALLCNN_LAYERS)   # 3 activation maps + logits
    model = CARSOModel()                          # the SmallCNN sizes by default
    c = model.condition(feats)                    # (N, fc_repr): the compressed representation
    recon_logits, mu, logvar = model(x, feats)    # training: q(z | x, c), z ~ q, pixel logits
    x_pure = model.decode(z, c)                   # inference: z ~ N(0, I), (N, 1, 28, 28) in [0, 1]

Layout (the zoo model's sizes; shapes per image):
  condition   the outputs of the classifier's three conv layers, taken with forward hooks:
                features.0    5x5 stem conv            (32, 28, 28)
                features.4.0  first conv_bn's conv      (64, 14, 14)
                features.5.0  second conv_bn's conv     (64, 14, 14)
              (pre-BatchNorm: the paper conditions on (pre)activations of the conv layers; the
              official code hooks the convs themselves). Each map goes through its own compressor,
              three blocks of [3x3 valid conv, BatchNorm, LeakyReLU 0.2] with channels
              C -> C/2 -> C/4 -> C/8:
                (32, 28, 28) -> (16, 26, 26) -> (8, 24, 24) -> (4, 22, 22)   1936 values
                (64, 14, 14) -> (32, 12, 12) -> (16, 10, 10) -> (8, 8, 8)     512 values (twice)
              flattened and concatenated (2960), then Linear -> fc_repr (512) + BatchNorm + LeakyReLU.
  encoder     (training only) the classifier's input, standardised, through two stride-2 3x3 convs
              (+ BatchNorm, LeakyReLU): (1, 28, 28) -> (enc_width, 14, 14) -> (2 enc_width, 7, 7);
              flattened and joined with the condition: Linear -> latent_dim + BatchNorm + LeakyReLU,
              then one Linear each for mu and logvar, (latent_dim,).
  decoder     Linear(z ++ condition -> 2w * 3 * 3) + BatchNorm + LeakyReLU, then transposed convs
                (2w, 3, 3) -> (2w, 7, 7) -> (w, 14, 14) -> (w/2, 28, 28)   (each + BatchNorm + LeakyReLU)
              and a 3x3 conv to (1, 28, 28): pixel logits; `decode` applies the sigmoid.

At inference only the condition compressors and the decoder run (the encoder is dropped); z ~ N(0, I).
The whole inference path is differentiable: gradients reach the input through the decoder, the
compressors and the classifier's own layers, which is what an adaptive attacker uses.

What the paper leaves open at this scale, and what we chose:
  layers      all three conv layers of SmallCNN (the paper takes the first layers of each WRN block
              plus two shortcuts; SmallCNN has only three convs, so all of them).
  sizes       latent_dim 64 (the official repository's old Fashion-MNIST variant used 64), fc_repr 512
              (the paper's CIFAR value), decoder width w = 32 (2w = 64 channels at 3x3: the CIFAR
              decoder starts at 256; scaled down for 28x28 grey images and a CPU budget: on one shared
              CPU thread a training step of 64 images took about 0.3 s at w = 32 and 0.47 s at w = 64),
              encoder width 4 (the official input compressor doubles the channels twice: 3 -> 6 -> 12
              on RGB; a grey image gets 1 -> 4 -> 8). 2.05M parameters, 1.98M of them used at inference
              (1.5M in the Linear 2960 -> 512 of the condition).
  encoder in  the classifier's input (clean or perturbed), as the official code does; the
              reconstruction target is always the clean image (advlab.purifiers.carso.train).

Measured on the zoo model: the latent is unused. Once beta reaches 1, the KL falls to about 0.001 nats:
the stem conv's 28x28 output carries the image, so the draws differ by a pixel standard deviation of
about 0.002, and the defense is close to deterministic (docs/results/carso_fmnist_n1000_seed0.md).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from advlab.validate import check_int

# SmallCNN (advlab.models): its three conv layers and their output shapes on 28x28 inputs
SMALLCNN_LAYERS = ("features.0", "features.4.0", "features.5.0")
SMALLCNN_SHAPES = ((32, 28, 28), (64, 14, 14), (64, 14, 14))
# the training split's statistics, to standardise the encoder's input (advlab.models.MEAN_STD)
_MEAN, _STD = 0.2860, 0.3530


def _check_number(name: str, v, positive: bool = False, maximum: float | None = None) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 \
            or (positive and v == 0) or (maximum is not None and v > maximum):
        bound = f" and <= {maximum}" if maximum is not None else ""
        raise ValueError(f"{name}: must be a finite number {'>' if positive else '>='} 0{bound}, got {v!r}")
    return float(v)


def _check_shapes(shapes) -> tuple[tuple[int, int, int], ...]:
    try:
        out = tuple(tuple(int(d) for d in s) for s in shapes)
    except (TypeError, ValueError):
        raise ValueError(f"condition_shapes: expected a sequence of (C, H, W), got {shapes!r}") from None
    if not out or any(len(s) != 3 or min(s) < 1 or s[1] < 7 or s[2] < 7 for s in out):
        raise ValueError(f"condition_shapes: expected a non-empty sequence of (C, H, W) with H, W >= 7 "
                         f"(three valid 3x3 convs remove 6), got {shapes!r}")
    return out


# ----------------------------------------------------------------------------- the condition
def classifier_features(classifier: nn.Module, x: torch.Tensor, layers) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The outputs of the named sub-modules of `classifier` on x, and its logits: ([(N, C_i, H_i, W_i)], (N, K)).

    Gathered with forward hooks during one ordinary forward pass, so the features are part of the
    autograd graph whenever x is (the adaptive attacker's path) and plain tensors under no_grad (the
    training path). A hooked output that the classifier later modifies in place (e.g. a layer followed
    by ReLU(inplace=True)) would be silently wrong, so that raises ValueError naming the layer.
    """
    modules = dict(classifier.named_modules())
    layers = tuple(layers)
    missing = [n for n in layers if n not in modules]
    if missing:
        raise ValueError(f"layers: {missing} are not sub-modules of {type(classifier).__name__}; "
                         f"conv layers it has: {[n for n, m in modules.items() if isinstance(m, nn.Conv2d)]}")
    found: dict[str, tuple[torch.Tensor, int]] = {}

    def hook(name):
        def fn(module, inputs, output):
            found[name] = (output, output._version)
        return fn

    handles = [modules[n].register_forward_hook(hook(n)) for n in layers]
    try:
        logits = classifier(x)
    finally:
        for h in handles:
            h.remove()
    changed = [n for n in layers if found[n][0]._version != found[n][1]]
    if changed:
        raise ValueError(f"layers: the outputs of {changed} are modified in place later in the forward pass "
                         f"(an in-place activation?); hook the layer before it or after it")
    return [found[n][0] for n in layers], logits


def feature_shapes(classifier: nn.Module, layers, image_shape=(1, 28, 28)) -> tuple[tuple[int, int, int], ...]:
    """(C, H, W) of each named layer's output, from one forward pass on a blank image (eval mode)."""
    from advlab.validate import eval_mode
    p = next(classifier.parameters(), None)
    with eval_mode(classifier), torch.no_grad():
        x = torch.zeros(1, *image_shape, device=p.device if p is not None else "cpu")
        feats, _ = classifier_features(classifier, x, layers)
    return tuple(tuple(f.shape[1:]) for f in feats)


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2)]


class LayerCompressor(nn.Module):
    """One layer's map (N, C, H, W) -> (N, C/8 * (H-6) * (W-6)): three [3x3 valid conv, BN, LeakyReLU 0.2]
    blocks with channels C -> C/2 -> C/4 -> C/8 (at least one channel each), flattened."""

    def __init__(self, shape):
        super().__init__()
        c, h, w = shape
        chans = [c] + [max(1, c // 2 ** k) for k in (1, 2, 3)]
        self.net = nn.Sequential(*_block(chans[0], chans[1]), *_block(chans[1], chans[2]),   # (C/2, H-2, W-2), (C/4, H-4, W-4)
                                 *_block(chans[2], chans[3]), nn.Flatten())                   # (C/8, H-6, W-6) -> flat
        self.out_features = chans[3] * (h - 6) * (w - 6)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net(f)


# ----------------------------------------------------------------------------- the conditional VAE
class CARSOModel(nn.Module):
    """The representation-conditional VAE (see the module docstring for the layout and the shapes).

    condition_shapes: (C, H, W) of each conditioning layer's output, in the order of `layers` (the
      names of those layers in the classifier; kept here so that the zoo model says what it conditions on).
    latent_dim, fc_repr: sizes of z and of the compressed condition; width: the decoder's w;
    enc_width: the training-only image encoder's first channel count; channels: image channels.
    """

    def __init__(self, condition_shapes=SMALLCNN_SHAPES, layers=SMALLCNN_LAYERS, latent_dim: int = 64,
                 fc_repr: int = 512, width: int = 32, enc_width: int = 4, channels: int = 1):
        super().__init__()
        for name, v in (("latent_dim", latent_dim), ("fc_repr", fc_repr), ("width", width),
                        ("enc_width", enc_width), ("channels", channels)):
            check_int(v, name)
        self.condition_shapes = _check_shapes(condition_shapes)
        self.layers = tuple(str(n) for n in layers)
        if len(self.layers) != len(self.condition_shapes):
            raise ValueError(f"layers: {len(self.layers)} names for {len(self.condition_shapes)} condition_shapes")
        self.latent_dim, self.fc_repr, self.width, self.enc_width, self.channels = \
            latent_dim, fc_repr, width, enc_width, channels
        # condition: per-layer compressors, then one linear layer over their concatenation
        self.compressors = nn.ModuleList(LayerCompressor(s) for s in self.condition_shapes)
        flat = sum(m.out_features for m in self.compressors)                                   # 2960 for SmallCNN
        self.repr_fc = nn.Sequential(nn.Linear(flat, fc_repr), nn.BatchNorm1d(fc_repr), nn.LeakyReLU(0.2))
        # encoder q(z | x, c), training only
        e = enc_width
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, e, 3, stride=2, padding=1), nn.BatchNorm2d(e), nn.LeakyReLU(0.2),          # (e, 14, 14)
            nn.Conv2d(e, 2 * e, 3, stride=2, padding=1), nn.BatchNorm2d(2 * e), nn.LeakyReLU(0.2),      # (2e, 7, 7)
            nn.Flatten())                                                                               # (2e * 49,)
        self.joint = nn.Sequential(nn.Linear(2 * e * 49 + fc_repr, latent_dim), nn.BatchNorm1d(latent_dim),
                                   nn.LeakyReLU(0.2))
        self.mu = nn.Linear(latent_dim, latent_dim)
        self.logvar = nn.Linear(latent_dim, latent_dim)
        # decoder p(x | z, c)
        w = width
        self.dec_fc = nn.Sequential(nn.Linear(latent_dim + fc_repr, 2 * w * 9), nn.BatchNorm1d(2 * w * 9),
                                    nn.LeakyReLU(0.2))
        self.dec = nn.Sequential(
            nn.ConvTranspose2d(2 * w, 2 * w, 3, stride=2), nn.BatchNorm2d(2 * w), nn.LeakyReLU(0.2),                # (2w, 7, 7)
            nn.ConvTranspose2d(2 * w, w, 4, stride=2, padding=1), nn.BatchNorm2d(w), nn.LeakyReLU(0.2),             # (w, 14, 14)
            nn.ConvTranspose2d(w, max(1, w // 2), 4, stride=2, padding=1), nn.BatchNorm2d(max(1, w // 2)),
            nn.LeakyReLU(0.2),                                                                                       # (w/2, 28, 28)
            nn.Conv2d(max(1, w // 2), channels, 3, padding=1))                                                       # (C, 28, 28) logits

    # --------------------------------------------------------------------------- the pieces
    def condition(self, feats) -> torch.Tensor:
        """The compressed representation (N, fc_repr) from the classifier's layer outputs (a list)."""
        feats = list(feats)
        if len(feats) != len(self.compressors):
            raise ValueError(f"feats: expected {len(self.compressors)} layer outputs, got {len(feats)}")
        for f, s, name in zip(feats, self.condition_shapes, self.layers):
            if tuple(f.shape[1:]) != s:
                raise ValueError(f"feats: layer {name} has shape {tuple(f.shape[1:])}, the model expects {s}")
        return self.repr_fc(torch.cat([m(f.float()) for m, f in zip(self.compressors, feats)], 1))

    def encode(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar), each (N, latent_dim), of q(z | x, c); x the classifier's input (N, C, 28, 28) in [0, 1]."""
        h = self.joint(torch.cat([self.encoder((x - _MEAN) / _STD), c], 1))
        return self.mu(h), self.logvar(h).clamp(-10, 10)

    def decode_logits(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Pixel logits (N, C, 28, 28) of p(x | z, c); z (N, latent_dim), c (N, fc_repr)."""
        h = self.dec_fc(torch.cat([z, c], 1)).view(len(z), 2 * self.width, 3, 3)                # (2w, 3, 3)
        return self.dec(h)

    def decode(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Reconstructions (N, C, 28, 28) in [0, 1]."""
        return torch.sigmoid(self.decode_logits(z, c))

    def forward(self, x: torch.Tensor, feats, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass: (pixel logits (N, C, 28, 28), mu, logvar) with z ~ q(z | x, c) (noise from `generator`)."""
        c = self.condition(feats)
        mu, logvar = self.encode(x, c)
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype).to(mu.device)
        z = mu + (0.5 * logvar).exp() * eps
        return self.decode_logits(z, c), mu, logvar

    def inference_parameters(self) -> int:
        """Parameters that run at inference (condition compressors and decoder; not the encoder)."""
        return sum(p.numel() for m in (self.compressors, self.repr_fc, self.dec_fc, self.dec) for p in m.parameters())

    def extra_repr(self) -> str:
        return (f"layers={self.layers}, condition_shapes={self.condition_shapes}, latent_dim={self.latent_dim}, "
                f"fc_repr={self.fc_repr}, width={self.width}, enc_width={self.enc_width}")


def build_carso(condition_shapes=SMALLCNN_SHAPES, layers=SMALLCNN_LAYERS, latent_dim: int = 64, fc_repr: int = 512,
                width: int = 32, enc_width: int = 4, channels: int = 1) -> CARSOModel:
    """The zoo builder of `fmnist/carso` (advlab.zoo.build calls it with the entry's arch_kwargs)."""
    return CARSOModel(condition_shapes, layers, latent_dim, fc_repr, width, enc_width, channels)
