"""Problem 3: SimSiam, self-supervised learning without negative pairs (IFT6135-H2023, Assignment 3).

Two augmented views x1, x2 of one image go through the same encoder f (backbone + projection MLP)
and a prediction MLP h; each prediction is pulled towards the other view's projection, held fixed:

    z_i = f(x_i),   p_i = h(z_i),   i = 1, 2
    L = 0.5 * D(p1, stopgrad(z2)) + 0.5 * D(p2, stopgrad(z1)),   D(p, z) = -cos(p, z)

Reference: Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021
(arXiv:2011.10566): Sec. 3 and Algorithm 1 for the method, Sec. 4 for the ablations that
`stop_gradient` and `MLP_mode` switch on.

Standalone: imports only torch and the standard library, and does nothing at import.
Everything runs on whatever device the inputs live on.
"""
from collections.abc import Callable

import torch
import torch.nn as nn

MLP_MODES = (None, "no_pred_mlp", "fixed_random_init")
SIMILARITY_FUNCTIONS = ("CosineSimilarity",)


class SimSiam(nn.Module):
    """f = backbone + 3-layer projection MLP, h = 2-layer bottleneck prediction MLP (Chen & He 2021, Sec. 3).

    Args:
        base_encoder: a torchvision-style ResNet constructor, called as
            `base_encoder(num_classes=dim, zero_init_residual=True)`; its classifier `fc`,
            `Linear(w, dim)`, becomes the projector's output layer (w = backbone feature width).
        dim: width d of the projections z and predictions p.
        pred_dim: bottleneck width of the predictor.
        stop_gradient: detach the targets z1, z2 (SimSiam); False is the ablation that collapses
            (Sec. 4.1).
        MLP_mode: None (trainable predictor); 'no_pred_mlp' (h is the identity, Table 1a);
            'fixed_random_init' (h frozen at a random init, Table 1b).
    """

    def __init__(self, base_encoder: Callable[..., nn.Module], dim: int = 2048, pred_dim: int = 512,
                 stop_gradient: bool = True, MLP_mode: str | None = None):
        super().__init__()
        if MLP_mode not in MLP_MODES:
            raise ValueError(f"MLP_mode must be one of {MLP_MODES}, got {MLP_mode!r}")
        self.stop_gradient = stop_gradient
        self.MLP_mode = MLP_mode

        # f: the backbone, whose classifier becomes the last layer of a 3-layer projector
        self.encoder = base_encoder(num_classes=dim, zero_init_residual=True)
        fc = getattr(self.encoder, "fc", None)
        if not isinstance(fc, nn.Linear) or fc.out_features != dim or fc.bias is None:
            raise TypeError(f"base_encoder(num_classes={dim}, zero_init_residual=True) must return a module whose "
                            f"`fc` is an nn.Linear(w, {dim}) with a bias, as torchvision's resnets do; got fc={fc!r}")
        w = fc.in_features  # backbone feature width: 512 for resnet18, 2048 for resnet50
        self.encoder.fc = nn.Sequential(
            nn.Linear(w, w, bias=False), nn.BatchNorm1d(w), nn.ReLU(inplace=True),  # first layer
            nn.Linear(w, w, bias=False), nn.BatchNorm1d(w), nn.ReLU(inplace=True),  # second layer
            fc, nn.BatchNorm1d(dim, affine=False),                                  # output layer, no ReLU
        )
        fc.bias.requires_grad = False  # the BN after it cancels any bias: keep it fixed

        # h: bottleneck predictor dim -> pred_dim -> dim
        self.predictor = nn.Sequential(
            nn.Linear(dim, pred_dim, bias=False), nn.BatchNorm1d(pred_dim), nn.ReLU(inplace=True),  # hidden layer
            nn.Linear(pred_dim, dim),                                                               # output layer
        )
        if MLP_mode == "fixed_random_init":
            self.predictor.requires_grad_(False)
            nn.init.normal_(self.predictor[0].weight, mean=0.0, std=0.01)
            nn.init.normal_(self.predictor[3].weight, mean=0.0, std=0.01)
            nn.init.zeros_(self.predictor[3].bias)
        elif MLP_mode == "no_pred_mlp":
            self.predictor = nn.Identity()  # built above all the same, so the RNG stream matches the reference

    def forward(self, x1: torch.Tensor, x2: torch.Tensor):
        """Projections and predictions of two views, as in Algorithm 1 of Chen & He (2021).

        Args:
            x1, x2: (B, C, H, W) two augmented views of the same B images.
        Returns:
            p1, p2: (B, dim) predictions h(f(x_i)).
            z1, z2: (B, dim) projections f(x_i), the targets; detached when `stop_gradient`, so the
                loss reaches the encoder only through p1 and p2.
        """
        z1, z2 = self.encoder(x1), self.encoder(x2)      # (B, dim) each; BN statistics per view
        p1, p2 = self.predictor(z1), self.predictor(z2)  # (B, dim) each
        if self.stop_gradient:
            z1, z2 = z1.detach(), z2.detach()            # stop-grad: the targets are constants
        return p1, p2, z1, z2

    def loss(self, p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor,
             similarity_function: str = "CosineSimilarity") -> torch.Tensor:
        """Symmetrised negative cosine similarity, eq. (4) of the assignment:

            L = 0.5 * D(p1, z2) + 0.5 * D(p2, z1),   D(p, z) = -(1/B) sum_b cos(p_b, z_b)

        The stop-gradient is already in the z's that `forward` returns. Inputs (B, dim); a scalar in [-1, 1].
        """
        if similarity_function not in SIMILARITY_FUNCTIONS:
            raise ValueError(f"similarity_function must be one of {SIMILARITY_FUNCTIONS}, got {similarity_function!r}")
        if not p1.shape == p2.shape == z1.shape == z2.shape:
            raise ValueError(f"p1, p2, z1, z2 must share one shape (B, dim), got "
                             f"{tuple(p1.shape)}, {tuple(p2.shape)}, {tuple(z1.shape)}, {tuple(z2.shape)}")
        cos = CosineSimilarity(dim=1)
        return -0.5 * (cos(p1, z2).mean() + cos(p2, z1).mean())


def bdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Batch-wise dot product: (B, S) x (B, S) -> (B,), out[i] = sum_s a[i, s] * b[i, s]."""
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(f"bdot expects two tensors of one shape (B, S), got {tuple(a.shape)} and {tuple(b.shape)}")
    return (a * b).sum(dim=1)


class CosineSimilarity(nn.Module):
    """Cosine similarity along `dim`, eq. (3) of the assignment, with the guard on the product of norms:

        cos(x1, x2) = sum(x1 * x2, dim) / max(||x1||_2 * ||x2||_2, eps)

    Shapes: x1 and x2 broadcast to a common (*1, D, *2), D at position `dim` -> (*1, *2).
    A zero vector has similarity 0 (not NaN) with anything, and a finite gradient.
    """

    def __init__(self, dim: int = 1, eps: float = 1e-8):
        super().__init__()
        self.dim = dim
        self.eps = eps

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        x1, x2 = torch.broadcast_tensors(x1, x2)  # `dim` indexes the common shape
        dot = (x1 * x2).sum(dim=self.dim)
        # vector_norm's gradient at 0 is 0, where sqrt(sum of squares) would give NaN
        norms = torch.linalg.vector_norm(x1, dim=self.dim) * torch.linalg.vector_norm(x2, dim=self.dim)
        return dot / norms.clamp_min(self.eps)
