"""Mult-VAE: the loss against the paper's formula computed by hand in numpy, the factorised form,
fold-in, determinism at evaluation and RecVAE's encoder (the ``multvae`` kind end to end:
tests/cli/test_cf_kinds.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recstack.core.errors import ConfigError
from recstack.core.id_lists import IdLists
from recstack.experiment.config import parse_config
from recstack.models.multvae import MultVAE, multi_hot

# 5 users x 7 item ids (id 0 = unknown, never set); user 0 is the empty OOV row.
ROWS = np.array([[0, 0, 0, 0, 0, 0, 0],
                 [0, 1, 1, 0, 0, 1, 0],
                 [0, 0, 1, 1, 0, 0, 0],
                 [0, 1, 0, 0, 1, 1, 1],
                 [0, 0, 0, 0, 0, 0, 1]], dtype=bool)


def tiny(**kwargs) -> MultVAE:
    torch.manual_seed(0)
    options = {"hidden_sizes": (5,), "latent_dim": 3, "dropout": 0.0}
    return MultVAE(torch.from_numpy(ROWS), **{**options, **kwargs})


def numpy_weights(model: MultVAE) -> list[tuple[np.ndarray, np.ndarray]]:
    layers = [*model.encoder, *model.decoder_hidden, model.decoder_out]
    return [(m.weight.detach().double().numpy(), m.bias.detach().double().numpy()) for m in layers]


def by_hand(model: MultVAE, x: np.ndarray, noise: np.ndarray, beta) -> tuple[float, np.ndarray]:
    """The negative ELBO of Liang et al. (eq. 6 with the multinomial log-likelihood) in numpy, and the logits."""
    (w1, b1), (we, be), (d1, c1), (do, co) = numpy_weights(model)
    xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    h = np.tanh(xn @ w1.T + b1)
    out = h @ we.T + be
    k = model.latent_dim
    mu, logvar = out[:, :k], out[:, k:]
    z = mu + noise * np.exp(0.5 * logvar)
    logits = np.tanh(z @ d1.T + c1) @ do.T + co
    log_softmax = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) \
        - logits.max(1, keepdims=True)
    nll = -(log_softmax * x).sum(1)
    kl = 0.5 * (np.exp(logvar) + mu ** 2 - 1 - logvar).sum(1)
    return float(np.mean(nll + beta * kl)), logits


def test_loss_is_the_multinomial_likelihood_plus_beta_kl_by_hand():
    model = tiny()
    x = ROWS[1:].astype(np.float64)
    noise = np.random.default_rng(1).normal(size=(4, 3))
    model.train()
    loss, nll, kl = model.negative_elbo(torch.from_numpy(x).float(), 0.3, torch.from_numpy(noise).float())
    expected, _ = by_hand(model, x, noise, 0.3)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert (nll + 0.3 * kl).item() == pytest.approx(expected, rel=1e-5)


def test_per_user_beta_scales_the_kl_by_row_size():
    model = tiny(beta_per_item=0.05)
    x = ROWS[1:].astype(np.float64)
    beta = model.beta(torch.from_numpy(x))
    np.testing.assert_allclose(beta.numpy(), 0.05 * x.sum(1))
    model.eval()
    loss, _, _ = model.negative_elbo(torch.from_numpy(x).float(), beta)
    expected, _ = by_hand(model, x, np.zeros((4, 3)), 0.05 * x.sum(1))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_kl_weight_anneals_linearly_to_beta_max_per_training_batch():
    model = tiny(beta_max=0.2, total_anneal_steps=10)
    batch = {"row": torch.tensor([1, 2, 3, 4])}
    betas = []
    for _ in range(4):
        betas.append(model.beta(model.seen[batch["row"]]))
        model.compute_loss(batch, training=True)
    model.compute_loss(batch, training=False)                 # evaluation does not advance the schedule
    assert betas == pytest.approx([0.0, 0.1, 0.2, 0.2])       # step / 10, capped at 0.2
    assert int(model.anneal_step) == 4
    assert tiny(beta_max=0.5, total_anneal_steps=0).beta(model.seen) == 0.5


def test_factorised_scores_are_the_decoder_logits_of_the_mean():
    model = tiny()
    model.train()                                               # user_embeddings evaluates in eval mode anyway
    users = torch.tensor([1, 2, 3, 4])
    scores = (model.user_embeddings(users) @ model.item_embeddings(torch.arange(7)).T).detach().double().numpy()
    _, logits = by_hand(model, ROWS[1:].astype(np.float64), np.zeros((4, 3)), 0.0)   # z = μ
    np.testing.assert_allclose(scores, logits, rtol=1e-5, atol=1e-6)
    assert model.training                                       # the mode is restored


def test_fold_in_of_a_training_row_is_the_user_embedding_and_eval_is_deterministic():
    model = tiny(dropout=0.5)
    model.train()
    users = torch.tensor([1, 3, 4])
    first = model.user_embeddings(users)
    torch.testing.assert_close(model.user_embeddings(users), first)      # no dropout, z = μ
    torch.testing.assert_close(model.fold_in(torch.from_numpy(ROWS[[1, 3, 4]])), first)
    histories = IdLists.from_lists([[1, 2, 5], [1, 4, 5, 6], [6]])
    torch.testing.assert_close(model.fold_in_histories(histories), first)
    model.eval()
    x = model.seen[1:].float()
    assert model.negative_elbo(x, 0.2)[0].item() == model.negative_elbo(x, 0.2)[0].item()
    # Unknown and out-of-range users read an empty row, like the OOV user 0.
    torch.testing.assert_close(model.user_embeddings(torch.tensor([0, 99])),
                               model.fold_in(torch.zeros(2, 7)))


def test_multi_hot_drops_unknown_ids_and_repeats():
    x = multi_hot(torch.tensor([0, 0, 1, 1, 2]), torch.tensor([2, 2, 0, 3, 9]), 3, 4)
    assert x.tolist() == [[False, False, True, False], [False, False, False, True], [False] * 4]


def test_recvae_encoder_by_hand():
    model = tiny(encoder="recvae", hidden_sizes=(4, 4, 4))
    enc = model.encoder
    x = ROWS[1:].astype(np.float64)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)

    def layer(k, a):
        w, b = enc.layers[k].weight.detach().double().numpy(), enc.layers[k].bias.detach().double().numpy()
        return a @ w.T + b

    def swish_ln(a):
        a = a / (1 + np.exp(-a))
        return (a - a.mean(1, keepdims=True)) / np.sqrt(a.var(1, keepdims=True) + 0.1)   # layer norm, eps 0.1

    h1 = swish_ln(layer(0, xn))
    h2 = swish_ln(layer(1, h1) + h1)
    h3 = swish_ln(layer(2, h2) + h1 + h2)                     # RecVAE: fc3(h2) + h1 + h2
    w, b = enc.head.weight.detach().double().numpy(), enc.head.bias.detach().double().numpy()
    out = h3 @ w.T + b
    model.eval()
    mu, logvar = model.encode(torch.from_numpy(x))
    np.testing.assert_allclose(mu.detach().double().numpy(), out[:, :3], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(logvar.detach().double().numpy(), out[:, 3:], rtol=1e-4, atol=1e-5)


def test_linear_decoder_option():
    model = tiny(decoder_sizes=())
    assert len(model.decoder_hidden) == 0 and model.decoder_out.in_features == 3
    z_dim = model.user_embeddings(torch.tensor([1])).shape[1]
    assert z_dim == 3 + 1                                      # [μ, 1]: the logits are linear in μ


def test_training_rows_are_the_users_with_items_and_bad_settings_are_refused():
    assert tiny().training_data()["row"].tolist() == [1, 2, 3, 4]
    with pytest.raises(ConfigError, match="dropout"):
        tiny(dropout=1.0)
    with pytest.raises(ConfigError, match="'row' column"):
        tiny().compute_loss({"item": torch.tensor([1])})
    raw = {"data": {"interactions": "x.csv", "columns": {"user": "u", "item": "i"}},
           "model": {"kind": "multvae", "dropout": 1.5, "hidden_sizes": []}}
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "cfg.yaml")
    assert "model.dropout: must be in [0, 1)" in str(info.value) and "model.hidden_sizes" in str(info.value)


def test_composite_prior_kl_is_log_q_minus_the_mixture_by_hand():
    model = tiny(prior="composite")
    x = ROWS[1:].astype(np.float64)
    with torch.no_grad():   # make the prior's encoder differ from the encoder
        for p in model.prior_encoder.parameters():
            p.add_(0.3 * torch.randn_like(p))
    noise = np.random.default_rng(2).normal(size=(4, 3))
    model.train()
    loss, nll, kl = model.negative_elbo(torch.from_numpy(x).float(), 0.4, torch.from_numpy(noise).float())

    def encode(layers):
        (w1, b1), (we, be) = [(m.weight.detach().double().numpy(), m.bias.detach().double().numpy()) for m in layers]
        out = np.tanh((x / np.linalg.norm(x, axis=1, keepdims=True)) @ w1.T + b1) @ we.T + be
        return out[:, :3], out[:, 3:]

    def log_n(z, mu, logvar):
        return -0.5 * (logvar + np.log(2 * np.pi) + (z - mu) ** 2 / np.exp(logvar))

    mu, logvar = encode(list(model.encoder))
    old_mu, old_logvar = encode(list(model.prior_encoder))
    z = mu + noise * np.exp(0.5 * logvar)
    mixture = np.log(0.15 * np.exp(log_n(z, 0, 0)) + 0.75 * np.exp(log_n(z, old_mu, old_logvar))
                     + 0.10 * np.exp(log_n(z, 0, 10.0)))
    expected_kl = (log_n(z, mu, logvar) - mixture).sum(1).mean()
    assert kl.item() == pytest.approx(expected_kl, rel=1e-4)
    assert loss.item() == pytest.approx((nll + 0.4 * kl).item(), rel=1e-6)


def test_alternating_updates_touch_one_side_per_phase_and_refresh_the_prior():
    model = tiny(prior="composite", encoder_steps=2, decoder_steps=1, dropout=0.5)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.05)
    batch = {"row": torch.tensor([1, 2, 3, 4])}

    def snapshot(module):
        return [p.detach().clone() for p in module.parameters()]

    def changed(before, module):
        return any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))

    phases = []
    for step in range(6):
        enc, dec = snapshot(model.encoder), snapshot(model.decoder_out)
        optimizer.zero_grad(set_to_none=True)
        model.train()
        model.compute_loss(batch, training=True).backward()
        if step % 3 == 0:   # a cycle starts: the prior's encoder is the encoder as it was
            assert not changed(enc, model.prior_encoder)
        optimizer.step()
        phases.append(("enc" if changed(enc, model.encoder) else "")
                      + ("dec" if changed(dec, model.decoder_out) else ""))
    assert phases == ["enc", "enc", "dec", "enc", "enc", "dec"]
    assert [model.phase(s) for s in range(4)] == ["encoder", "encoder", "decoder", "encoder"]
    assert tiny().phase(5) == "joint"
