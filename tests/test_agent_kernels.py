"""The CPU fast path of the learner (nexlify.agent.fast_path, compiled_head: compiled loops, the
taken-action head) against the plain-torch reference it stands in for."""

from __future__ import annotations

import dataclasses

import numba
import numpy as np
import pytest
import torch

from nexlify.agent import cpu_kernels
from nexlify.agent.compiled_head import (
    FusedC51Loss,
    TakenHead,
    c51_head_loss,
    taken_action_linear,
)
from nexlify.agent.config import AgentConfig
from nexlify.agent.fast_path import (
    CompiledKernels,
    ReferenceKernels,
    compiled_greedy_projection,
    compiled_projection,
    taken_head,
)
from nexlify.agent.losses import (
    c51_taken_loss,
    greedy_projected_target,
    project_distribution,
)
from nexlify.agent.networks import build_q_network

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
    fast = compiled_projection(probs_BZ, rewards_B, discounts_B, terminated_B, support_Z,
                               v_min=-10.0, v_max=10.0)  # fmt: skip
    as64 = [t.double() for t in (probs_BZ, rewards_B, discounts_B, terminated_B, support_Z)]
    reference = project_distribution(*as64)
    assert fast.dtype == torch.float32  # compared with float64: tolerance for float32 rounding
    torch.testing.assert_close(fast.double(), reference, rtol=0, atol=1e-5)
    torch.testing.assert_close(fast.sum(dim=1), torch.ones(B), rtol=0, atol=1e-5)

    greedy = compiled_greedy_projection(probs_BAZ, rewards_B, discounts_B, terminated_B,
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
    with torch.no_grad():  # the kernel alone, without the autograd function: the same output
        quiet = taken_action_linear(h, w.view(A, Z, 32), b.view(A, Z), actions)
    assert torch.equal(quiet, fast) and not quiet.requires_grad


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
def test_the_compiled_taken_output_equals_the_gathered_head(
    changes: dict[str, object],
) -> None:
    config = dataclasses.replace(AgentConfig(hidden_sizes=(64, 64)), **changes)  # type: ignore[arg-type]
    net = build_q_network(40, A, config, seed=0)
    g = torch.Generator().manual_seed(4)
    obs = torch.randn(B, 40, generator=g)
    actions = torch.randint(0, A, (B,), generator=g)
    upstream = torch.randn(B, net.n_atoms, generator=g)

    taken = CompiledKernels().taken_output(net, obs, actions)
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


@numba.njit(cache=False, fastmath=cpu_kernels._FASTMATH)  # exp32 runs with its caller's flags
def _exp_all(x: np.ndarray, out: np.ndarray) -> None:
    for i in range(x.shape[0]):
        out[i] = cpu_kernels.exp32(x[i])


def test_the_compiled_exp_is_float32_exact_to_two_ulp_and_handles_the_edges() -> None:
    x = np.random.default_rng(0).uniform(-87.0, 0.0, 200_000).astype(np.float32)
    x = np.concatenate([x, np.float32([0.0, -1e-8, -86.9, -87.0])])
    got = np.empty_like(x)
    _exp_all(x, got)
    want = np.exp(x.astype(np.float64))
    assert np.max(np.abs(got - want) / want) < 2.5e-7  # float32 epsilon is 1.19e-7
    edges = np.float32([-87.5, -200.0, -np.inf, np.nan])
    out = np.empty_like(edges)
    _exp_all(edges, out)
    assert out[:3].tolist() == [0.0, 0.0, 0.0]  # below the smallest normal float32
    assert np.isnan(out[3])


def _logits(seed: int, shape: tuple[int, ...], scale: float = 3.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("double", [False, True], ids=["greedy", "double"])
def test_the_target_from_logits_equals_softmax_then_projection(seed: int, double: bool) -> None:
    _, rewards_B, discounts_B, terminated_B, support_Z = _c51_inputs(seed)
    logits = _logits(seed, (B, Z) if double else (B, A, Z))
    logits[0] = 0.0  # a uniform distribution (every action's Q is equal: first action wins)
    logits[1] *= 30.0  # nearly one-hot rows
    # Far from the sample's first logit (which the kernel shifts by): redone row by row.
    logits[2] -= 200.0
    if not double:
        logits[3, 4] -= 300.0
    logits[4].view(-1)[0] += 150.0
    fast = CompiledKernels().c51_target(logits, rewards_B, discounts_B, terminated_B, support_Z,
                                        v_min=-10.0, v_max=10.0)  # fmt: skip
    as64 = [t.double() for t in (logits, rewards_B, discounts_B, terminated_B, support_Z)]
    dim = 1 if double else 2
    probs = as64[0].softmax(dim=dim)
    if double:
        want = project_distribution(probs, *as64[1:], v_min=-10.0, v_max=10.0)
    else:
        want = greedy_projected_target(probs, *as64[1:], v_min=-10.0, v_max=10.0)
    assert fast.dtype == torch.float32
    torch.testing.assert_close(fast.double(), want, rtol=0, atol=1e-5)
    torch.testing.assert_close(fast.sum(dim=1), torch.ones(B), rtol=0, atol=1e-5)


def _identity_head(logits_BZ: torch.Tensor) -> TakenHead:
    """A head whose taken-action output is ``logits_BZ`` itself (each action's block an identity
    matrix, no bias): the fused head's loss is then the compiled cross-entropy of those logits,
    and the torso output's gradient is the logits' gradient, both exactly."""
    Z = logits_BZ.shape[1]
    return TakenHead(logits_BZ, torch.eye(Z).repeat(A, 1), torch.zeros(A * Z), None, A)


@pytest.mark.parametrize("weighted", [False, True], ids=["uniform", "importance-weighted"])
def test_the_compiled_c51_loss_equals_float64_with_gradients(weighted: bool) -> None:
    g = torch.Generator().manual_seed(7)
    logits = (torch.randn(B, Z, generator=g) * 4.0).requires_grad_(True)
    target = torch.rand(B, Z, generator=g).softmax(dim=1)
    support = torch.linspace(-10.0, 10.0, Z)
    weights = torch.rand(B, generator=g) if weighted else None
    actions = torch.arange(B) % A
    fast = c51_head_loss(_identity_head(logits), actions, target, support, weights)
    assert isinstance(fast, FusedC51Loss) and fast.computed_grads is not None
    fast.backward()
    fast_grad = logits.grad.clone()  # type: ignore[union-attr]

    ref_logits = logits.detach().double().requires_grad_(True)
    ref = c51_taken_loss(ref_logits, target.double(), support.double(),
                         None if weights is None else weights.double())  # fmt: skip
    ref.loss.backward()
    torch.testing.assert_close(fast.loss.double(), ref.loss.detach(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(fast.td_error_B.double(), ref.td_error_B, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast.q_taken_B.double(), ref.q_taken_B, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast_grad.double(), ref_logits.grad, rtol=1e-5, atol=1e-7)
    assert not fast.q_taken_B.requires_grad and not fast.td_error_B.requires_grad


def test_an_action_outside_the_head_is_refused() -> None:
    h = torch.randn(8, 16)
    w, b = torch.randn(A, Z, 16), torch.randn(A, Z)
    for bad in (A, -1):
        actions = torch.zeros(8, dtype=torch.int64)
        actions[5] = bad
        with pytest.raises(IndexError, match="outside the network's actions"):
            taken_action_linear(h, w, b, actions)


@pytest.mark.parametrize("batch", [1, 3, 4, 5, 130])
def test_the_taken_action_output_of_a_sample_does_not_depend_on_the_rest_of_the_batch(
    batch: int,
) -> None:
    """Samples go through in blocks of four per action: a sample's output is the same whether
    it shares its block with others, fills a block's tail, or is alone."""
    g = torch.Generator().manual_seed(11)
    h = torch.randn(batch, 48, generator=g)
    w, b = torch.randn(A, Z, 48, generator=g), torch.randn(A, Z, generator=g)
    actions = torch.randint(0, A, (batch,), generator=g)
    together = taken_action_linear(h, w, b, actions)
    for k in range(batch):
        alone = taken_action_linear(h[k : k + 1], w, b, actions[k : k + 1])
        assert torch.equal(alone[0], together[k])


@pytest.mark.parametrize("path", ["reference", "compiled"])
def test_the_c51_loss_keeps_a_nan_logit_visible_and_large_logits_finite(path: str) -> None:
    g = torch.Generator().manual_seed(9)
    logits = torch.randn(B, Z, generator=g)
    logits[1] *= 1e4  # a saturated softmax: finite loss, a one-hot distribution
    logits[3, 7] = float("nan")
    target = torch.rand(B, Z, generator=g).softmax(dim=1)
    support = torch.linspace(-10.0, 10.0, Z)
    logits.requires_grad_(True)
    if path == "reference":
        out = c51_taken_loss(logits, target, support)
    else:
        out = c51_head_loss(_identity_head(logits), torch.arange(B) % A, target, support)
        assert isinstance(out, FusedC51Loss)
    assert torch.isnan(out.loss)  # the divergence guard must see it
    assert (
        torch.isnan(out.td_error_B[3])
        and torch.isfinite(out.td_error_B[torch.arange(B) != 3]).all()
    )
    assert torch.isfinite(out.q_taken_B[1])


@pytest.mark.parametrize("weighted", [False, True], ids=["uniform", "importance-weighted"])
@pytest.mark.parametrize(
    "changes",
    [{"dueling": False}, {"dueling": True}, {"dueling": True, "noisy": True}],
    ids=["c51", "c51-dueling", "c51-dueling-noisy"],
)
def test_the_fused_c51_head_equals_the_reference_layer_and_loss(
    changes: dict[str, object], weighted: bool
) -> None:
    """c51_head_loss runs the taken-action layer and the cross-entropy as one compiled call;
    the loss, per-sample terms, expected Q and every parameter's gradient equal those of the
    reference (forward_taken_raw, then c51_taken_loss) up to float32 rounding."""
    config = dataclasses.replace(AgentConfig(hidden_sizes=(64, 48), distributional="c51"),
                                 **changes)  # type: ignore[arg-type]  # fmt: skip
    net = build_q_network(40, A, config, seed=0)
    g = torch.Generator().manual_seed(12)
    obs = torch.randn(B, 40, generator=g)
    actions = torch.randint(0, A, (B,), generator=g)
    target = torch.rand(B, Z, generator=g).softmax(dim=1)
    weights = torch.rand(B, generator=g) if weighted else None

    ref = c51_taken_loss(net.forward_taken_raw(obs, actions), target, net.support_Z, weights)
    ref.loss.backward()
    ref_grads = [p.grad.clone() for p in net.parameters()]  # type: ignore[union-attr]
    net.zero_grad(set_to_none=True)
    head = taken_head(net, obs)
    assert head is not None and (head.value_BZ is not None) == config.dueling
    fused = c51_head_loss(head, actions, target, net.support_Z, weights)
    assert isinstance(fused, FusedC51Loss)
    fused.backward()
    torch.testing.assert_close(fused.loss, ref.loss.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused.td_error_B, ref.td_error_B, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused.q_taken_B, ref.q_taken_B, rtol=1e-5, atol=1e-5)
    for param, grad in zip(net.parameters(), ref_grads, strict=True):
        assert param.grad is not None
        torch.testing.assert_close(param.grad, grad, rtol=1e-4, atol=1e-5)
    assert not fused.td_error_B.requires_grad and not fused.q_taken_B.requires_grad


def test_the_fused_c51_head_refuses_a_weight_changed_before_backward() -> None:
    net = build_q_network(40, A, AgentConfig(hidden_sizes=(32,), distributional="c51"), seed=0)
    obs, actions = torch.randn(8, 40), torch.zeros(8, dtype=torch.int64)
    head = taken_head(net, obs)
    assert head is not None
    out = c51_head_loss(head, actions, torch.full((8, Z), 1.0 / Z), net.support_Z)
    with torch.no_grad():
        head.weight_AZH.add_(1.0)  # an optimizer step between forward and backward
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.backward()


def test_the_fused_c51_head_computes_no_gradients_where_none_are_wanted() -> None:
    """Under no_grad the head gives the same loss without gradients, and asking for them fails
    as a loss without a graph does; with gradients, backward accumulates like loss.backward."""
    net = build_q_network(40, A, AgentConfig(hidden_sizes=(32,), distributional="c51"), seed=0)
    obs, actions = torch.randn(8, 40), torch.arange(8) % A
    target = torch.full((8, Z), 1.0 / Z)
    with torch.no_grad():
        head = taken_head(net, obs)
        assert head is not None
        quiet = c51_head_loss(head, actions, target, net.support_Z)
    assert isinstance(quiet, FusedC51Loss) and quiet.computed_grads is None
    with pytest.raises(RuntimeError, match="does not require grad"):
        quiet.backward()
    head = taken_head(net, obs)
    assert head is not None
    out = c51_head_loss(head, actions, target, net.support_Z)
    assert isinstance(out, FusedC51Loss) and out.computed_grads is not None
    assert torch.equal(out.loss, quiet.loss)
    out.backward()
    once = [p.grad.clone() for p in net.parameters()]  # type: ignore[union-attr]
    head = taken_head(net, obs)
    assert head is not None
    c51_head_loss(head, actions, target, net.support_Z).backward()
    for param, first in zip(net.parameters(), once, strict=True):
        assert torch.equal(param.grad, first + first)  # type: ignore[arg-type]


@pytest.mark.parametrize("changes", [{}, {"dueling": True}], ids=["c51", "c51-dueling"])
def test_the_compiled_kernels_hand_float64_to_the_reference_unchanged(
    changes: dict[str, object],
) -> None:
    """The kernels are float32: on a float64 network every compiled method gives exactly what
    the reference gives (the same tensor code runs)."""
    config = dataclasses.replace(AgentConfig(hidden_sizes=(32,), distributional="c51"),
                                 **changes)  # type: ignore[arg-type]  # fmt: skip
    net = build_q_network(40, A, config, seed=0).double()
    _, rewards_B, discounts_B, terminated_B, support_Z = (t.double() for t in _c51_inputs(3))
    g = torch.Generator().manual_seed(14)
    obs = torch.randn(B, 40, generator=g, dtype=torch.float64)
    actions = torch.randint(0, A, (B,), generator=g)
    target = torch.rand(B, Z, generator=g, dtype=torch.float64).softmax(dim=1)
    step = (rewards_B, discounts_B, terminated_B, support_Z)
    assert taken_head(net, obs) is None
    outputs = []
    for kernels in (CompiledKernels(), ReferenceKernels()):
        # The online logits are cast to float32, as the learner's are.
        loss = kernels.c51_online(net, obs, actions)(target.float(), support_Z.float(), None)
        outputs.append([
            loss.loss.detach(), loss.td_error_B, kernels.greedy(net, obs),
            kernels.taken_output(net, obs, actions).detach(),
            kernels.c51_target(_logits(4, (B, A, Z)).double(), *step, v_min=-10, v_max=10),
            kernels.c51_target(_logits(5, (B, Z)).double(), *step, v_min=-10, v_max=10),
        ])  # fmt: skip
    for got, want in zip(*outputs, strict=True):
        assert torch.equal(got, want)


def test_the_fused_c51_head_passes_its_gradients_through_hooks_and_into_existing_grads() -> None:
    """Where the head stores its weight and bias gradients directly as ``.grad`` (a fresh
    leaf), autograd would have kept the same tensor; a leaf with a hook or a gradient already
    there goes through autograd as before: the hook sees the gradient, the old one is added."""
    config = AgentConfig(hidden_sizes=(32,), distributional="c51", dueling=False)
    net = build_q_network(40, A, config, seed=0)
    obs, actions = torch.randn(8, 40), torch.arange(8) % A
    target = torch.full((8, Z), 1.0 / Z)
    weight = net.layers[-1].weight
    head = taken_head(net, obs)
    assert head is not None and head.weight is weight
    out = c51_head_loss(head, actions, target, net.support_Z)
    assert isinstance(out, FusedC51Loss)
    computed = out.computed_grads
    assert computed is not None and computed.grads is not None
    given = computed.grads[next(k for k, t in enumerate(computed.tensors) if t is weight)]
    out.backward()
    assert weight.grad is given  # kept as autograd keeps a fresh gradient nothing else holds
    assert computed.grads is None  # let go of: nothing else aliases the .grad now
    first = weight.grad.clone()
    with pytest.raises(RuntimeError, match="second time"):
        out.backward()  # used up, as a graph without retain_graph is
    assert torch.equal(weight.grad, first)

    seen: list[torch.Tensor] = []
    weight.register_hook(lambda grad: seen.append(grad.clone()))  # type: ignore[arg-type]
    net.zero_grad(set_to_none=True)
    head = taken_head(net, obs)
    assert head is not None
    c51_head_loss(head, actions, target, net.support_Z).backward()
    assert len(seen) == 1 and torch.equal(seen[0], first)
    assert torch.equal(weight.grad, first)  # type: ignore[arg-type]
    head = taken_head(net, obs)
    assert head is not None
    c51_head_loss(head, actions, target, net.support_Z).backward()
    assert len(seen) == 2 and torch.equal(weight.grad, first + first)  # type: ignore[arg-type]


def test_the_taken_head_is_only_offered_where_the_compiled_kernels_run() -> None:
    c51 = build_q_network(40, A, AgentConfig(hidden_sizes=(32,), distributional="c51"), seed=0)
    scalar = build_q_network(40, A, AgentConfig(hidden_sizes=(32,)), seed=0)
    obs = torch.randn(4, 40)
    assert taken_head(c51, obs) is not None
    assert taken_head(scalar, obs) is None  # one output per action: the dense layer
    assert taken_head(c51.double(), obs.double()) is None  # the kernels are float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert taken_head(c51.float(), obs) is None


def test_the_compiled_c51_greedy_action_is_the_argmax_of_the_expected_q() -> None:
    g = torch.Generator().manual_seed(13)
    logits = torch.randn(300, A, Z, generator=g) * 3.0
    logits[0] = 0.0  # all actions equal: the first
    logits[1, 3] = logits[1, 5] = logits[1, 3] + 2.0  # tied best pair: the first of them
    logits[2, 4, 9] = float("nan")  # a NaN expected value wins, as torch's argmax has it
    logits[3, 2] += 200.0  # far from the row's first logit: the re-shifted softmax
    support = torch.linspace(-10.0, 10.0, Z)
    want = (logits.double().softmax(dim=2) @ support.double()).argmax(dim=1)
    got = torch.empty(300, dtype=torch.int64)
    cpu_kernels.c51_greedy(logits.numpy(), support.numpy(), got.numpy())
    assert torch.equal(got, want)
    assert got[0] == 0 and got[2] == 4


@pytest.mark.parametrize("changes", [{}, {"dueling": True, "noisy": True}], ids=["c51", "rainbow"])
def test_the_agent_acts_greedily_on_the_expected_q_with_the_compiled_kernel(
    changes: dict[str, object],
) -> None:
    from nexlify.agent.dqn import DQNAgent

    config = dataclasses.replace(AgentConfig(hidden_sizes=(32,), distributional="c51"),
                                 **changes)  # type: ignore[arg-type]  # fmt: skip
    agent = DQNAgent(40, A, config, seed=3)
    obs = np.random.default_rng(0).standard_normal((256, 40)).astype(np.float32)
    np.testing.assert_array_equal(agent.greedy(obs), agent.q_values(obs).argmax(axis=1))
    # Acting with epsilon 0: the same argmax, of the noisy network where it has noisy layers.
    exploring = agent.q_values_tensor(obs, noise=bool(config.noisy)).argmax(dim=1).numpy()
    np.testing.assert_array_equal(agent.act(obs, 0.0, np.random.default_rng(1)), exploring)


def test_a_nan_expected_value_is_the_greedy_target_action_as_in_the_tensor_version() -> None:
    """A diverged target network (a NaN logit of one action) gives that sample a NaN target in
    both compiled C51 targets, as torch's argmax picks the NaN in the tensor version, so the
    loss's guard sees it; the other samples are untouched."""
    probs_BAZ, rewards_B, discounts_B, terminated_B, support_Z = _c51_inputs(5)
    logits = probs_BAZ.log()
    logits[6, 2, 10] = float("nan")
    step = (rewards_B, discounts_B, terminated_B, support_Z)
    fast = CompiledKernels().c51_target(logits, *step, v_min=-10.0, v_max=10.0)
    nan_probs = probs_BAZ.clone()
    nan_probs[6, 2, 10] = float("nan")
    from_probs = compiled_greedy_projection(nan_probs, *step, v_min=-10.0, v_max=10.0)
    tensor = greedy_projected_target(nan_probs.double(), *(t.double() for t in step),
                                     v_min=-10.0, v_max=10.0)  # fmt: skip
    for target in (fast, from_probs, tensor):
        assert torch.isnan(target[6]).any()  # NaN mass on the atoms the NaN action's lands on
        assert torch.isfinite(target[torch.arange(B) != 6]).all()
