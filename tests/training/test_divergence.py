"""A diverged model is an error, never a result: fit raises DivergedError and keeps the finite epochs."""

import math

import pytest
import torch

import recstack
from recstack import Columns
from recstack.core.errors import DivergedError
from recstack.training import Callback
from test_training import TwoTower, synthetic   # tests/ is on sys.path (conftest.py lives there)


def adagrad(lr):
    return lambda params: torch.optim.Adagrad(params, lr=lr)


def test_infinite_learning_rate_raises_where_and_what_to_try():
    torch.manual_seed(0)
    model = TwoTower()
    with pytest.raises(DivergedError) as info:
        model.fit(synthetic(), epochs=3, batch_size=64, optimizer=adagrad(math.inf), verbose=False)
    err = info.value
    # Step 1's gradients are finite; its update makes the weights non-finite; step 2's loss is NaN.
    assert (err.epoch, err.step, err.global_step, err.quantity) == (1, 2, 2, "loss")
    assert math.isnan(err.value) and err.last_finite_epoch == 0
    message = str(err)
    assert "epoch 1, step 2" in message and "learning rate (now inf)" in message
    assert "user.weight" in message and "clip_grad_norm" in message
    assert len(model.history) == 0 and err.history is model.history
    assert isinstance(err, FloatingPointError)           # generic handlers of arithmetic errors still match


class BlowUpAt(Callback):
    """Sets the learning rate to inf at the start of ``epoch``."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            for group in self.model.optimizer.param_groups:
                group["lr"] = math.inf


def test_history_keeps_the_finite_epochs():
    torch.manual_seed(0)
    model = TwoTower()
    with pytest.raises(DivergedError) as info:
        model.fit(synthetic(), epochs=5, batch_size=64, optimizer=adagrad(0.1), verbose=False, callbacks=[BlowUpAt(3)])
    assert info.value.epoch == 3 and info.value.last_finite_epoch == 2
    assert model.history.epochs == [1, 2]
    assert all(math.isfinite(v) for v in model.history.history["loss"])
    assert info.value.to_dict()["last_finite_epoch"] == 2


def test_divergence_in_the_last_step_of_an_epoch_is_caught_by_the_parameter_check():
    torch.manual_seed(0)
    model = TwoTower()
    with pytest.raises(DivergedError) as info:   # one step per epoch: no later loss would show it
        model.fit(synthetic(64), epochs=1, batch_size=64, optimizer=adagrad(math.inf), verbose=False)
    assert info.value.quantity == "parameters" and info.value.step is None
    assert set(info.value.names) == {"user.weight", "item.weight"}
    assert len(model.history) == 0


class SqrtAtZero(recstack.Model):
    """loss = sqrt(w - w0) at w = w0: finite loss (0), infinite gradient."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(3))

    def compute_loss(self, batch, training=False):
        return torch.sqrt(self.w - self.w.detach()).sum() + 0.0 * batch["x"].float().sum()


def test_a_non_finite_gradient_is_never_applied():
    model = SqrtAtZero()
    with pytest.raises(DivergedError) as info:
        model.fit(Columns({"x": torch.arange(8)}), epochs=1, batch_size=4,
                  optimizer=lambda p: torch.optim.SGD(p, lr=0.1), verbose=False)
    assert (info.value.quantity, info.value.names, info.value.step) == ("gradient", ["w"], 1)
    assert "gradient of w is not finite" in str(info.value)
    assert torch.equal(model.w.detach(), torch.ones(3))    # the optimizer never stepped


def test_clip_grad_norm_matches_torch_clipping():
    batch = synthetic(64)
    torch.manual_seed(0)
    clipped = TwoTower()
    torch.manual_seed(0)
    reference = TwoTower()
    clipped.fit(batch, epochs=1, batch_size=64, optimizer=lambda p: torch.optim.SGD(p, lr=1.0), shuffle=False,
                verbose=False, clip_grad_norm=0.01)
    opt = torch.optim.SGD(reference.parameters(), lr=1.0)
    reference.compute_loss(dict(batch), training=True).backward()
    norm = torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.01)
    assert float(norm) > 0.01                               # the clip did something
    opt.step()
    for a, b in zip(clipped.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b)


def test_clip_grad_norm_must_be_positive():
    with pytest.raises(recstack.core.errors.ConfigError, match="clip_grad_norm"):
        TwoTower().fit(synthetic(), optimizer=adagrad(0.1), verbose=False, clip_grad_norm=0.0)
