"""The label masked autoencoder (L-MAE), split the way the paper's figure is.

    stack fuse -> patchify -> mask selector (outside: masking.py) -> encoder over visible patches
    -> IPS at removed patches -> decoder over all patches -> per-pixel class logits

With a pretrained image encoder (config `encoder`, encoder.py), its features are added where the image
enters: to every patch's token before the encoder (the image part of the stack fuse), to the IPS of the
removed patches (what the encoder sees there), and to the pixel refinement (the stride-8 map). The
encoder itself runs outside the model (frozen: training reads its cached features).

Conventions: label tensors are long with -1 where no label is known; `removed` is (B, L) bool with
1 = removed (the patch's label is hidden from the encoder and will be reconstructed); `editable` is
(B, S, S) bool, the pixels whose class the model decides. Every known pixel feeds the prior, inside
removed patches too (explicit `--missing` repair knows the labels around the holes).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import LMAEConfig
from .encoder import feature_channels
from .fuse import one_hot, sincos_pos_embed_2d, stack_fuse, unpatchify
from .layers import Block, RefineHead
from .masking import expand_mask
from .propagate import nearest_fill

# ImageNet statistics: images enter the model normalised with these.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


class LMAE(nn.Module):
    def __init__(self, cfg: LMAEConfig):
        super().__init__()
        self.cfg = cfg
        K, p = cfg.num_classes, cfg.patch_size
        # encoder
        self.patch_embed = nn.Linear(p * p * (K + 3), cfg.enc_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.enc_dim))  # keeps the encoder defined when all is removed
        self.register_buffer("enc_pos", sincos_pos_embed_2d(cfg.enc_dim, cfg.grid)[None], persistent=False)
        ramp = torch.linspace(0, cfg.drop_path, cfg.enc_depth + cfg.dec_depth).tolist()
        self.encoder = nn.ModuleList(Block(cfg.enc_dim, cfg.enc_heads, cfg.mlp_ratio, ramp[i])
                                     for i in range(cfg.enc_depth))
        self.enc_norm = nn.LayerNorm(cfg.enc_dim)
        # IPS + decoder
        self.dec_embed = nn.Linear(cfg.enc_dim, cfg.dec_dim)
        ips_channels = 3 + (K + 2 if cfg.use_prior else 0)  # image; the prior, editable mask, distance
        self.ips_embed = nn.Linear(p * p * ips_channels, cfg.dec_dim)
        self.removed_token = nn.Parameter(torch.zeros(1, 1, cfg.dec_dim))  # "this patch was removed"
        self.register_buffer("dec_pos", sincos_pos_embed_2d(cfg.dec_dim, cfg.grid)[None], persistent=False)
        self.decoder = nn.ModuleList(Block(cfg.dec_dim, cfg.dec_heads, cfg.mlp_ratio, ramp[cfg.enc_depth + i])
                                     for i in range(cfg.dec_depth))
        self.dec_norm = nn.LayerNorm(cfg.dec_dim)
        self.head = nn.Linear(cfg.dec_dim, p * p * K)
        # our additions (docs/model.md): propagation prior and image-guided refinement
        self.prior_scale = nn.Parameter(torch.tensor(float(cfg.prior_scale_init))) if cfg.use_prior else None
        self.refine = None
        if cfg.encoder != "none":
            c8, c16, c32 = feature_channels(cfg.encoder)
            self.feature_norms = nn.ModuleList(nn.LayerNorm(c) for c in (c16, c32))
            self.feature_embed = nn.Linear(c16 + c32, cfg.enc_dim)  # into every patch's token
            self.ips_feature_embed = nn.Linear(c16 + c32, cfg.dec_dim)  # into the IPS of removed patches
        if cfg.refine_dim:
            self.refine = RefineHead(K, cfg.refine_dim, feature_channels=c8 if cfg.encoder != "none" else 0)
        # -log(class weight of the training loss), added to the logits at inference: the weighted loss
        # (paper eq. 10-12) learns p(c|x) scaled by w_c; this turns it back into the posterior.
        self.register_buffer("logit_bias", torch.zeros(K))
        self.register_buffer("image_mean", torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(IMAGE_STD).view(1, 3, 1, 1), persistent=False)
        self._init_weights()

    def _init_weights(self):
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.removed_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.cfg.use_prior:
            # With the prior on, the transformer learns a correction: start it near zero so an untrained
            # model already equals nearest-label fill (not exactly zero, so every weight gets a gradient).
            nn.init.normal_(self.head.weight, std=1e-4)

    # -- the pieces ------------------------------------------------------------------------------

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] -> normalised."""
        return (image - self.image_mean) / self.image_std

    def embed_patches(self, linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        """linear(patchify(x)) as a convolution of stride p: (B, C, S, S) -> (B, L, D), without patchify's copy."""
        p = self.cfg.patch_size
        weight = linear.weight.view(linear.out_features, p, p, x.shape[1]).permute(0, 3, 1, 2)  # (D, C, p, p)
        x = x.to(weight.dtype).contiguous(memory_format=torch.channels_last)  # oneDNN is faster so (RefineHead)
        return F.conv2d(x, weight, linear.bias, stride=p).flatten(2).transpose(1, 2)

    def patch_features(self, features: list[torch.Tensor]) -> torch.Tensor:
        """The encoder's maps at strides 8, 16, 32 -> the stride-16 and -32 features of each patch, each
        layer-normalised, (B, L, C16+C32). The stride-16 map is the patch grid; the stride-32 one is upsampled."""
        _, f16, f32 = features
        f32 = F.interpolate(f32.float(), size=f16.shape[-2:], mode="bilinear", align_corners=False)
        return torch.cat([norm(f.float().flatten(2).transpose(1, 2))
                          for norm, f in zip(self.feature_norms, (f16, f32))], -1)

    def forward_encoder(self, fused: torch.Tensor, removed: torch.Tensor, patch_features: torch.Tensor | None = None):
        """fused (B, K+3, S, S), removed (B, L), patch_features (B, L, F) or None
        -> visible tokens (B, 1+V, E), their ids (B, V), key mask (B, 1+V)."""
        B = fused.shape[0]
        x = self.embed_patches(self.patch_embed, fused) + self.enc_pos  # (B, L, E)
        if patch_features is not None:
            x = x + self.feature_embed(patch_features)
        # visible patches first, in patch order; V = most visible patches of any sample in the batch
        order = torch.argsort(removed.to(torch.int8), dim=1, stable=True)  # (B, L)
        n_visible = (~removed).sum(1)  # (B,)
        V = int(n_visible.max())
        ids = order[:, :V]  # (B, V)
        x = torch.gather(x, 1, ids.unsqueeze(-1).expand(-1, -1, x.shape[-1]))  # (B, V, E)
        real = torch.arange(V, device=x.device)[None] < n_visible[:, None]  # (B, V): padding is False
        x = torch.cat([self.cls_token.expand(B, -1, -1), x], 1)  # (B, 1+V, E)
        key_mask = torch.cat([real.new_ones(B, 1), real], 1)  # (B, 1+V)
        for blk in self.encoder:
            x = blk(x, key_mask)
        return self.enc_norm(x), ids, real

    def forward_decoder(self, latent, ids, real, removed, ips_source, patch_features=None) -> torch.Tensor:
        """latent (B, 1+V, E) -> logits per patch (B, L, p*p*K). IPS fills the removed positions."""
        B, L = removed.shape
        x = self.dec_embed(latent)  # (B, 1+V, D)
        cls, vis = x[:, :1], x[:, 1:]
        # IPS: the removed positions get the embedded image (and prior) patch, the encoder's features of
        # the patch, plus the removed token
        full = self.embed_patches(self.ips_embed, ips_source) + self.removed_token  # (B, L, D)
        if patch_features is not None:
            full = full + self.ips_feature_embed(patch_features)
        # scatter visible tokens back to their positions (padding tokens are sent to a dummy slot L)
        dest = torch.where(real, ids, torch.full_like(ids, L))  # (B, V)
        full = torch.cat([full, full.new_zeros(B, 1, full.shape[-1])], 1)  # (B, L+1, D)
        # under autocast vis is bf16 and full (embedding + fp32 token) fp32: scatter needs one dtype
        full = full.scatter(1, dest.unsqueeze(-1).expand(-1, -1, vis.shape[-1]), vis.to(full.dtype))[:, :L]  # (B, L, D)
        x = torch.cat([cls, full + self.dec_pos], 1)  # (B, 1+L, D)
        for blk in self.decoder:
            x = blk(x)
        return self.head(self.dec_norm(x)[:, 1:])  # (B, L, p*p*K)

    def forward(self, image: torch.Tensor, label: torch.Tensor, removed: torch.Tensor,
                editable: torch.Tensor | None = None, nearest: tuple[torch.Tensor, torch.Tensor] | None = None,
                without_prior: bool = False, features: list[torch.Tensor] | None = None) -> torch.Tensor:
        """image (B, 3, S, S) in [0, 1]; label (B, S, S) long, -1 = unknown; removed (B, L) bool;
        editable (B, S, S) bool: the pixels whose class is being decided (default: the unknown ones);
        features: the image encoder's maps at strides 8, 16, 32 of the image at cfg.encoder_size, which
        a model with an encoder needs.

        In blind repair the background pixels of removed patches are editable but keep their label in
        the prior (they are suspect, not unknown); with explicit missing values they are unknown.
        nearest: `nearest_fill(label, with_distance=True)` when the caller has it already.
        Returns class logits (B, K, S, S) for every pixel; with `without_prior`, less the prior term
        prior_scale * one-hot(nearest label), which the caller adds back (at another resolution).
        """
        cfg = self.cfg
        K, p = cfg.num_classes, cfg.patch_size
        removed_px = expand_mask(removed, cfg.grid, p)  # (B, S, S)
        editable = (label < 0) if editable is None else editable | (label < 0)
        image = self.normalize(image)
        # the encoder sees only the labels of visible patches
        fused = stack_fuse(torch.where(removed_px, torch.full_like(label, -1), label), image, K)  # (B, K+3, S, S)
        if (features is None) != (cfg.encoder == "none"):
            raise ValueError(f"the model's encoder is {cfg.encoder!r}: pass its features exactly when it has one")
        tokens = None if features is None else self.patch_features(features)  # (B, L, C16+C32)
        latent, ids, real = self.forward_encoder(fused, removed, tokens)
        # the prior: nearest known label, and the distance to it in patch sides
        nearest, dist = nearest_fill(label, with_distance=True) if nearest is None else nearest
        dist = (dist / p).clamp(max=cfg.grid).unsqueeze(1)  # (B, 1, S, S)
        guide = torch.cat([editable.unsqueeze(1).float(), dist], 1)  # (B, 2, S, S)
        if cfg.use_prior:
            prior = one_hot(nearest, K)  # (B, K, S, S)
            ips_source = torch.cat([image, prior, guide], 1)  # (B, 3+K+2, S, S)
        else:
            prior, ips_source = None, image
        logits = unpatchify(self.forward_decoder(latent, ids, real, removed, ips_source, tokens), p, K)  # (B, K, S, S)
        with_prior = logits if prior is None else logits + self.prior_scale * prior
        if self.refine is not None:
            zeros = torch.zeros_like(image[:, :1]).expand(-1, K, -1, -1) if prior is None else prior
            residual = self.refine(image, zeros, guide, with_prior, None if features is None else features[0])
            logits = logits + residual if without_prior else with_prior + residual
        elif not without_prior:
            logits = with_prior
        if not self.training:
            logits = logits + self.logit_bias.view(1, -1, 1, 1)
        return logits


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
