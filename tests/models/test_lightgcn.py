"""LightGCN: the normalised adjacency and the propagation against a dense numpy computation, the BPR
loss by hand, a gradient check, negative sampling and the cached propagated embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recstack.core.errors import ConfigError
from recstack.models.lightgcn import LightGCN, as_csr, bpr_loss, normalized_adjacency, propagate

# 4 users x 5 item ids; (2, 3) appears twice (counts once); user 0 and item 0 have no edges.
USERS = torch.tensor([1, 1, 2, 2, 2, 3, 3])
ITEMS = torch.tensor([1, 2, 2, 3, 3, 1, 4])
U, V = 4, 5


def dense_adjacency() -> np.ndarray:
    r = np.zeros((U, V))
    r[USERS.numpy(), ITEMS.numpy()] = 1.0
    a = np.block([[np.zeros((U, U)), r], [r.T, np.zeros((V, V))]])
    deg = a.sum(1)
    inv = np.where(deg > 0, 1 / np.sqrt(np.maximum(deg, 1e-12)), 0.0)
    return inv[:, None] * a * inv[None, :]


def test_adjacency_and_propagation_match_dense_numpy():
    adjacency = normalized_adjacency(USERS, ITEMS, U, V)
    a = dense_adjacency()
    np.testing.assert_allclose(adjacency.to_dense().numpy(), a, rtol=1e-6)
    ego = np.random.default_rng(0).normal(size=(U + V, 3))
    layers = [ego, a @ ego, a @ a @ ego]
    expected = sum(layers) / 3                                # mean of E⁰, E¹, E² (K = 2)
    got = propagate(torch.from_numpy(ego).float(), adjacency, 2)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(propagate(torch.from_numpy(ego).float(), adjacency, 0).numpy(), ego, rtol=1e-6)


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_propagation_gradient_check(layout: str):
    # The backward pass multiplies by Â again (Âᵀ = Â); gradcheck compares it with finite differences.
    adjacency = normalized_adjacency(USERS, ITEMS, U, V).double()
    adjacency = as_csr(adjacency) if layout == "csr" else adjacency
    ego = torch.randn(U + V, 2, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda e: propagate(e, adjacency, 3), (ego,))


def test_csr_propagation_and_its_gradient_match_a_dense_autograd_computation():
    adjacency = normalized_adjacency(USERS, ITEMS, U, V).double()   # == dense_adjacency() (test above)
    a = adjacency.to_dense()
    ego = torch.randn(U + V, 3, dtype=torch.double, requires_grad=True)
    weights = torch.randn(U + V, 3, dtype=torch.double)
    got = propagate(ego, as_csr(adjacency), 2)
    (got * weights).sum().backward()
    grad = ego.grad.clone()
    ego.grad = None
    expected = (ego + a @ ego + a @ (a @ ego)) / 3        # plain dense autograd, no custom backward
    (expected * weights).sum().backward()
    np.testing.assert_allclose(got.detach().numpy(), expected.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad.numpy(), ego.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_bpr_loss_by_hand():
    pos, neg = torch.tensor([2.0, -1.0, 30.0]), torch.tensor([1.0, 0.5, -30.0])
    expected = -np.mean(np.log(1 / (1 + np.exp(-(pos - neg).numpy().astype(np.float64)))))
    assert bpr_loss(pos, neg).item() == pytest.approx(expected, rel=1e-6)


def test_batch_loss_is_bpr_on_propagated_scores_plus_l2_on_ego_embeddings_by_hand():
    torch.manual_seed(0)
    model = LightGCN(U, V, USERS, ITEMS, embedding_dim=3, num_layers=2, l2=0.01)
    users, pos, neg = torch.tensor([1, 2, 3]), torch.tensor([2, 3, 4]), torch.tensor([4, 1, 2])
    ego = torch.cat([model.user_embedding.weight, model.item_embedding.weight]).detach().double().numpy()
    a = dense_adjacency()
    final = (ego + a @ ego + a @ a @ ego) / 3
    fu, fi = final[:U], final[U:]
    s_pos = (fu[users] * fi[pos]).sum(1)
    s_neg = (fu[users] * fi[neg]).sum(1)
    reg = ((ego[:U][users] ** 2).sum() + (ego[U:][pos] ** 2).sum() + (ego[U:][neg] ** 2).sum()) / (2 * 3)
    expected = -np.mean(np.log(1 / (1 + np.exp(-(s_pos - s_neg))))) + 0.01 * reg
    assert model.bpr_batch_loss(users, pos, neg).item() == pytest.approx(expected, rel=1e-5)
    # Gradients reach the ego embeddings through the propagation.
    model.bpr_batch_loss(users, pos, neg).backward()
    assert model.item_embedding.weight.grad.abs().sum() > 0


def test_negatives_avoid_the_users_training_items():
    torch.manual_seed(0)
    model = LightGCN(U, V, USERS, ITEMS, embedding_dim=2, catalogue=torch.arange(1, V))
    users = torch.tensor([1, 2, 3]).repeat(200)
    negatives = model.sample_negatives(users)
    seen = {(int(u), int(i)) for u, i in zip(USERS, ITEMS)}
    assert not any((int(u), int(j)) in seen for u, j in zip(users, negatives))
    assert set(negatives.tolist()) <= {1, 2, 3, 4}
    assert set(negatives[users == 1].tolist()) == {3, 4}          # user 1 has seen 1 and 2


def test_propagated_embeddings_are_cached_until_the_weights_change_and_saved():
    torch.manual_seed(0)
    model = LightGCN(U, V, USERS, ITEMS, embedding_dim=3, num_layers=1)
    users, items = model.propagated()
    torch.testing.assert_close(model.user_embeddings(torch.arange(U)), users.detach())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model.compute_loss({"user": USERS, "item": ITEMS}, training=True).backward()
    optimizer.step()
    users, items = model.propagated()                           # the step changed them: recomputed
    torch.testing.assert_close(model.item_embeddings(torch.arange(V)), items.detach())
    # A model rebuilt without the graph scores from the saved propagated embeddings.
    rebuilt = LightGCN(U, V, None, None, embedding_dim=3, num_layers=1)
    rebuilt.load_state_dict(model.state_dict())
    torch.testing.assert_close(rebuilt.user_embeddings(torch.tensor([1, 3, 99])),
                               torch.cat([users.detach()[[1, 3]], torch.zeros(1, 3)]))
    with pytest.raises(ConfigError, match="without its training graph"):
        rebuilt.compute_loss({"user": USERS, "item": ITEMS}, training=True)
