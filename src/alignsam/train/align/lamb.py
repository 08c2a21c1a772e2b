"""LAMB (You et al., 2019, "Large Batch Optimization for Deep Learning"): ALIGN's optimiser.

Adam's moments, with decoupled weight decay added to the update, and each parameter tensor's step scaled by
the *trust ratio* `||w|| / ||update||`, so every layer moves by about `lr` times its own norm whatever its
gradient scale; that is what lets ALIGN train at batch 16384. As in tensorflow_addons' LAMB (used by Kakao's
COYO-ALIGN), a parameter group can turn the layer adaptation off (`adapt=False`), which the trainer does for
the groups without weight decay (norms, biases, the temperature), like tfa's `exclude_from_layer_adaptation`
defaulting to `exclude_from_weight_decay`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.optim import Optimizer


class Lamb(Optimizer):
    """LAMB with bias-corrected Adam moments.

    Args:
        params: parameters or parameter groups; a group may set `adapt=False` to skip the trust ratio.
        lr: learning rate (ALIGN: 1e-3 peak).
        betas, eps: Adam's.
        weight_decay: decoupled decay added to the Adam direction before the trust ratio (ALIGN: 1e-5).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        adapt: bool = True,
    ) -> None:
        if lr < 0.0 or eps < 0.0 or weight_decay < 0.0 or not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"Invalid LAMB hyper-parameters: lr={lr}, betas={betas}, eps={eps}, wd={weight_decay}.")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "adapt": adapt})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.float()
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                state["step"] += 1
                step = float(state["step"])
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                # Adam direction with bias correction, then decoupled weight decay.
                update = (m / (1 - beta1**step)) / ((v / (1 - beta2**step)).sqrt() + group["eps"])
                weight = p.float()
                if group["weight_decay"] != 0.0:
                    update = update.add(weight, alpha=group["weight_decay"])
                if group["adapt"]:
                    w_norm, u_norm = weight.norm(), update.norm()
                    # A zero tensor (fresh init) or a zero update has no scale to trust: take the plain step.
                    # Kept as a tensor: no host sync per parameter on a GPU.
                    ratio = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
                    update = update * ratio
                p.add_(update.to(p.dtype), alpha=-group["lr"])
        return loss
