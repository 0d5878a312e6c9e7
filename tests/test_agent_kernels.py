"""The CPU fast paths of the learner (compiled loops, the taken-action head, oneDNN layers)
against the plain tensor code they replace."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from nexlify.agent.config import AgentConfig
from nexlify.agent.losses import greedy_projected_target, project_distribution
from nexlify.agent.networks import build_q_network, taken_action_linear

B, A, Z = 64, 7, 51


def _c51_inputs(seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    probs_BAZ = torch.rand(B, A, Z, generator=g).softmax(dim=2)
    rewards_B = torch.randn(B, generator=g) * 4.0  # some shifted atoms leave the support
    discounts_B = torch.full((B,), 0.99**3)
    terminated_B = (torch.rand(B, generator=g) < 0.2).float()
    support_Z = torch.linspace(-10.0, 10.0, Z)
    return probs_BAZ, rewards_B, discounts_B, terminated_B, support_Z


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_compiled_projection_equals_the_tensor_projection(seed: int) -> None:
    probs_BAZ, rewards_B, discounts_B, terminated_B, support_Z = _c51_inputs(seed)
    probs_BZ = probs_BAZ[:, 0]
    fast = project_distribution(probs_BZ, rewards_B, discounts_B, terminated_B, support_Z)
    as64 = [t.double() for t in (probs_BZ, rewards_B, discounts_B, terminated_B, support_Z)]
    reference = project_distribution(*as64)  # float64 takes the scatter_add path
    assert fast.dtype == torch.float32  # compared with float64: tolerance for float32 rounding
    torch.testing.assert_close(fast.double(), reference, rtol=0, atol=1e-5)
    torch.testing.assert_close(fast.sum(dim=1), torch.ones(B), rtol=0, atol=1e-5)

    greedy = greedy_projected_target(probs_BAZ, rewards_B, discounts_B, terminated_B,
                                     support_Z, v_min=-10.0, v_max=10.0)  # fmt: skip
    as64 = [t.double() for t in (probs_BAZ, rewards_B, discounts_B, terminated_B, support_Z)]
    expected = greedy_projected_target(*as64, v_min=-10.0, v_max=10.0)
    torch.testing.assert_close(greedy.double(), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("actions_of", ["random", "one_action", "two_actions_unused_rest"])
def test_the_taken_action_linear_layer_matches_the_dense_layer_with_gradients(
    actions_of: str,
) -> None:
    g = torch.Generator().manual_seed(3)
    h = torch.randn(B, 32, generator=g, requires_grad=True)
    w = torch.randn(A * Z, 32, generator=g, requires_grad=True)
    b = torch.randn(A * Z, generator=g, requires_grad=True)
    actions = torch.randint(0, A, (B,), generator=g)
    if actions_of == "one_action":
        actions = torch.full((B,), A - 1)
    elif actions_of == "two_actions_unused_rest":
        actions = torch.randint(0, 2, (B,), generator=g) * 3
    upstream = torch.randn(B, Z, generator=g)

    fast = taken_action_linear(h, w.view(A, Z, 32), b.view(A, Z), actions)
    (fast * upstream).sum().backward()
    fast_grads = [t.grad.clone() for t in (h, w, b)]  # type: ignore[union-attr]
    for t in (h, w, b):
        t.grad = None
    dense = torch.nn.functional.linear(h, w, b).view(B, A, Z)
    dense = dense.gather(1, actions.view(B, 1, 1).expand(B, 1, Z)).squeeze(1)
    (dense * upstream).sum().backward()
    torch.testing.assert_close(fast, dense, rtol=1e-5, atol=1e-5)
    for got, want in zip(fast_grads, (h.grad, w.grad, b.grad), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "changes",
    [
        {"distributional": "c51", "dueling": True},
        {"distributional": "c51", "dueling": False},
        {"distributional": "qr", "dueling": True},
        {"distributional": "c51", "dueling": True, "noisy": True},
    ],
    ids=["c51-dueling", "c51", "qr-dueling", "c51-dueling-noisy"],
)
def test_forward_taken_raw_equals_the_gathered_full_head(changes: dict[str, object]) -> None:
    config = dataclasses.replace(AgentConfig(hidden_sizes=(64, 64)), **changes)  # type: ignore[arg-type]
    net = build_q_network(40, A, config, seed=0)
    g = torch.Generator().manual_seed(4)
    obs = torch.randn(B, 40, generator=g)
    actions = torch.randint(0, A, (B,), generator=g)
    upstream = torch.randn(B, net.n_atoms, generator=g)

    taken = net.forward_taken_raw(obs, actions)
    (taken * upstream).sum().backward()
    fast_grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    net.zero_grad(set_to_none=True)
    full = net.forward_raw(obs)
    gathered = full.gather(1, actions.view(B, 1, 1).expand(B, 1, net.n_atoms)).squeeze(1)
    (gathered * upstream).sum().backward()
    torch.testing.assert_close(taken, gathered, rtol=1e-5, atol=1e-5)
    for name, param in net.named_parameters():
        if param.grad is None:
            assert name not in fast_grads
            continue
        torch.testing.assert_close(fast_grads[name], param.grad, rtol=1e-4, atol=1e-4)


def test_no_grad_layers_on_onednn_equal_the_autograd_path() -> None:
    config = dataclasses.replace(AgentConfig(hidden_sizes=(128, 128)), distributional="c51")
    net = build_q_network(300, A, config, seed=0)
    obs = torch.randn(256, 300, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        fast = net.forward_raw(obs)  # large enough for the oneDNN path where it exists
    slow = net.forward_raw(obs).detach()  # autograd on: plain F.linear
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-4)
