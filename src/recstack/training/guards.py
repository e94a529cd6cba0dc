"""What the fit loop checks so that a failure says what went wrong and what to do.

* :class:`StepGuard`: every step, the loss, the regularisation loss and the gradients must be
  finite before the optimizer applies them, and after every epoch the parameters must be
  finite; otherwise :class:`~recstack.core.errors.DivergedError`. The check costs one fused
  reduction over the gradients (``torch._foreach_norm``: their global L2 norm is finite iff
  every gradient is, short of a norm past ~1.8e19, which is divergence as well) and **one**
  host synchronisation per step, which also fetches the two loss values the loop logs anyway
  (the loop used to sync twice per step for them). Optional gradient clipping uses the same norm.
* :func:`explain_lookup_error`: when ``compute_loss`` fails inside an embedding lookup (ids out
  of range, float ids), the batch is run again under ``torch.no_grad`` with a check on every
  ``nn.Embedding``/``nn.EmbeddingBag`` input, so the error names the column, the embedding, the
  bad id and the vocabulary size. This runs only after a failure: the happy path pays nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..core.errors import DivergedError, IdDtypeError, IdOutOfRangeError
from ..layers.embedding import check_lookup_ids
from .history import History

if TYPE_CHECKING:  # pragma: no cover
    from .trainable import Trainable

def _l2(tensors: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
    """Global L2 norm of ``tensors`` as a 0-d float32 tensor on ``device``: one fused
    ``torch._foreach_norm`` per (device, dtype) group; NaN or inf if any element is (or if the
    norm exceeds float32's range, ~1.8e19, which counts as divergence too)."""
    tensors = [t for t in tensors if t.numel()]
    if not tensors:
        return torch.zeros((), device=device)
    norms = torch._foreach_norm(tensors, 2.0)
    return torch.linalg.vector_norm(torch.stack([n.to(device, torch.float32) for n in norms]))


def _all_finite(tensors: Sequence[torch.Tensor]) -> bool:
    """Whether every element is finite (per-tensor sums: NaN/inf propagate; one sync)."""
    sums = [t.detach().float().sum() for t in tensors if t.numel()]
    return not sums or bool(torch.isfinite(torch.stack([x.to(sums[0].device) for x in sums])).all())


class StepGuard:
    """Finite checks (and optional clipping) for one ``fit`` call.

    Args:
        model: the model being trained (parameter names for the messages).
        optimizer: its optimizer (learning rates for the messages).
        device: where the model lives (the step's statistics are gathered there).
        clip_grad_norm: rescale the gradients so that their global L2 norm is at most this.
        check_loss: check the loss every step (False for a sharded batch, whose per-rank losses
            are checked at the end of the epoch after summing over ranks, so that every rank
            raises together; the gradients, identical on every rank, are checked each step).
    """

    def __init__(self, model: "Trainable", optimizer: torch.optim.Optimizer, device: torch.device,
                 clip_grad_norm: float | None = None, check_loss: bool = True):
        self.model, self.optimizer, self.device = model, optimizer, device
        self.clip_grad_norm = clip_grad_norm
        self.check_loss = check_loss
        self.params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        self.global_step = 0
        self.epoch = 0
        self.last_finite_epoch = 0
        self.history: History | None = None

    # Per step ----------------------------------------------------------------------------------
    def check_step(self, loss: torch.Tensor, reg: torch.Tensor, step: int) -> tuple[float, float]:
        """After ``backward``, before ``optimizer.step``: (loss, regularization loss) as floats.

        Raises DivergedError when one of them (if checked) or any gradient is not finite.
        """
        grads = []
        for _, p in self.params:
            g = p.grad
            if g is None:
                continue
            if g.is_sparse:
                if self.clip_grad_norm is not None:
                    p.grad = g = g.coalesce()      # the norm of the summed rows, not of their pieces
                g = g._values()
            grads.append(g)
        grads = [g for g in grads if g.numel()]
        if self.clip_grad_norm is not None:
            total = _l2(grads, self.device)
            if grads:   # no sync: a non-finite norm raises below, before the optimizer steps
                torch._foreach_mul_(grads, (self.clip_grad_norm / (total + 1e-6)).clamp(max=1.0))
            norms = [total]
        else:
            norms = list(torch._foreach_norm(grads, 2.0)) if grads else []
        # One sync for the two losses and every gradient's norm (stack promotes dtypes).
        parts = [loss.detach().reshape(()), reg.detach().reshape(()), *norms]
        if any(t.device != self.device for t in parts):
            parts = [t.to(self.device) for t in parts]
        loss_value, reg_value, *norm_values = torch.stack(parts).tolist()
        grad_value = sum(norm_values)   # NaN/inf propagate
        checked = (loss_value, reg_value, grad_value) if self.check_loss else (grad_value,)
        if not all(math.isfinite(v) for v in checked):
            raise self._step_error(loss_value, reg_value, step)
        self.global_step += 1
        return loss_value, reg_value

    # Per epoch --------------------------------------------------------------------------------
    def check_epoch(self, epoch: int, losses: dict[str, float], steps: int) -> None:
        """After an epoch's ``steps`` steps (and the sum over ranks): its mean losses and every
        parameter must be finite."""
        for key in ("loss", "regularization_loss") if steps else ():
            value = losses[key]
            if not math.isfinite(value):
                raise self._error(f"the epoch's mean {key.replace('_', ' ')} is {value}", epoch, None, key, [],
                                  value, self._bad_parameters())
        bad = self._bad_parameters(quick=True)
        if bad:
            raise self._error(f"the parameters {_names(bad)} are not finite after the epoch's last "
                              "optimizer step, although its gradients were", epoch, None, "parameters", bad,
                              None, bad)

    def epoch_done(self, epoch: int) -> None:
        self.last_finite_epoch = epoch

    # Diagnosis (failure path only: Python loops are fine here) ---------------------------------
    def _bad_parameters(self, quick: bool = False) -> list[str]:
        with torch.no_grad():
            if quick and _all_finite([p for _, p in self.params]):
                return []
            return [name for name, p in self.params if not bool(torch.isfinite(p.detach()).all())]

    def _step_error(self, loss_value: float, reg_value: float, step: int) -> DivergedError:
        bad_params = self._bad_parameters()
        bad_grads = []
        for name, p in self.params:
            g = p.grad
            if g is not None:
                g = g.coalesce()._values() if g.is_sparse else g
                if not bool(torch.isfinite(g).all()):
                    bad_grads.append(name)
        if self.check_loss and not math.isfinite(loss_value):
            what, quantity, names, value = f"the loss is {loss_value}", "loss", bad_grads, loss_value
        elif self.check_loss and not math.isfinite(reg_value):
            what, quantity, names, value = (f"the regularization loss is {reg_value}", "regularization_loss",
                                            bad_grads, reg_value)
        else:
            what = f"the gradient of {_names(bad_grads) if bad_grads else 'the parameters'} is not finite"
            quantity, names, value = "gradient", bad_grads, None
        return self._error(what, self.epoch, step + 1, quantity, names, value, bad_params)

    def _error(self, what: str, epoch: int, step: int | None, quantity: str, names: list[str],
               value: float | None, bad_params: list[str]) -> DivergedError:
        where = (f"epoch {epoch}, step {step} (optimizer step {self.global_step + 1} of this fit call)"
                 if step is not None else f"the end of epoch {epoch}")
        lrs = sorted({float(g["lr"]) for g in self.optimizer.param_groups if "lr" in g})
        lr = ", ".join(f"{x:g}" for x in lrs) if lrs else "unknown"
        cause = ""
        if bad_params and quantity != "parameters" and self.global_step == 0:
            cause = (f" The parameters {_names(bad_params)} were not finite before the first step: check the "
                     "weights the model was built or loaded with.")
        elif bad_params and quantity != "parameters":
            cause = (f" The parameters {_names(bad_params)} were already non-finite: an optimizer update "
                     "with finite gradients overflowed them, which points at the learning rate.")
        finished = len(self.history) if self.history is not None else 0
        kept = (f"model.history keeps the {finished} finite epoch(s) of this call; the last finite epoch is "
                f"{self.last_finite_epoch}." if finished else f"No epoch of this call finished (the last finite "
                f"epoch is {self.last_finite_epoch}).")
        clip = ("a smaller clip_grad_norm" if self.clip_grad_norm is not None
                else "gradient clipping (fit(..., clip_grad_norm=1.0))")
        message = (f"Training diverged at {where}: {what}.{cause} "
                   f"Try a lower learning rate (now {lr}), {clip}, reduction='mean' for a sum-reduced loss "
                   f"over large batches, and check the inputs for NaN/inf values. {kept}")
        return DivergedError(message, epoch=epoch, step=step, global_step=self.global_step + (step is not None),
                             quantity=quantity, names=names, value=value, last_finite_epoch=self.last_finite_epoch,
                             history=self.history)


def _names(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


# Lookup failures -----------------------------------------------------------------------------------
class _LookupProblem(Exception):
    def __init__(self, module_name: str, module: nn.Module, ids: torch.Tensor, error: Exception):
        super().__init__(str(error))
        self.module_name, self.module, self.ids, self.error = module_name, module, ids, error


def _looks_like_lookup_error(exc: BaseException) -> bool:
    if isinstance(exc, (IdOutOfRangeError, IdDtypeError, IndexError)):
        return True
    return isinstance(exc, (RuntimeError, TypeError)) and "indices" in str(exc)


def explain_lookup_error(model: "Trainable", batch: dict[str, torch.Tensor], exc: BaseException,
                         training: bool) -> BaseException | None:
    """A clearer error for ``exc`` raised by ``model.compute_loss(batch)``, or None to keep ``exc``.

    Re-runs the batch (no gradients) with a pre-hook on every embedding module that checks its
    ids; the first bad lookup gives an IdOutOfRangeError / IdDtypeError naming the embedding
    (its attribute path in the model) and the batch column that holds the ids, when the ids are
    a column as is. CUDA kernels report a bad index as a device-side assert that poisons the
    context, so nothing is re-run there (recstack's Embedding checks its ids before the lookup).
    """
    if not _looks_like_lookup_error(exc):
        return None
    if any(t.device.type == "cuda" for t in batch.values()):
        return None
    handles = []

    def hook(name: str):
        def check(module: nn.Module, args: tuple) -> None:
            if args and isinstance(args[0], torch.Tensor):
                try:
                    check_lookup_ids(args[0], module.num_embeddings, f"embedding {name!r}")
                except (IdOutOfRangeError, IdDtypeError) as problem:
                    raise _LookupProblem(name, module, args[0], problem) from None
        return check

    for name, module in model.named_modules():
        if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
            handles.append(module.register_forward_pre_hook(hook(name or "(the model)")))
    try:
        with torch.no_grad():
            model.compute_loss(batch, training=training)
    except _LookupProblem as found:
        column = _column_of(batch, found.ids)
        prefix = f"column {column!r}: " if column else "a tensor computed from the batch: "
        return type(found.error)(prefix + str(found.error))
    except Exception:  # the re-run failed elsewhere: keep the original error
        return None
    finally:
        for handle in handles:
            handle.remove()
    return None


def _column_of(batch: dict[str, torch.Tensor], ids: torch.Tensor) -> str | None:
    """The batch column whose tensor the ids are (the same object, or equal values)."""
    for name, values in batch.items():
        if values is ids:
            return name
    for name, values in batch.items():
        if values.shape == ids.shape and values.dtype == ids.dtype and torch.equal(values, ids):
            return name
    return None
