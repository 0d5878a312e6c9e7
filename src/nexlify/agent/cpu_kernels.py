"""Compiled CPU loops (numba) for the distributional learner's hot spots.

Each kernel does the arithmetic of a tensor expression in :mod:`nexlify.agent.losses` or
:mod:`nexlify.agent.networks` in one pass over float32 numpy views of CPU tensors. At the sizes
the learner runs (B = 128, A = 7, Z = 51) the tensor versions are a dozen or more small
operations whose per-call cost exceeds their arithmetic; the tensor versions stay the reference
(``agent.cpu_kernels: off``, and every device but the CPU). :mod:`nexlify.agent.fast_path` and
:mod:`nexlify.agent.compiled_head` call these kernels. Loops run over the batch inside compiled
code only.

Shapes are suffixed as in the losses: B batch, A actions, Z atoms, H hidden units.
"""

from __future__ import annotations

import numba
import numpy as np

# Reassociation lets LLVM vectorise the dot products (changing the summation order, so results
# match the tensor versions to float rounding); the no-NaN/no-inf flags are left off so that a
# diverging network still shows NaN in its loss.
_FASTMATH = {"reassoc", "contract"}

# A kernel called from another kernel is compiled with the flags of whichever caller compiled
# it first, and that variant is cached and reused (numba issue #7168): results then depend on
# what ran first on the machine. So every helper called from kernels with other flags is
# inline="always" (inlined into each caller and compiled with its flags), and a kernel that
# calls another non-inlined kernel has the same flags as it (tests/test_kernel_compile_order.py).


@numba.njit(cache=True, inline="always")
def _group_by_action(actions_B: np.ndarray, A: int) -> tuple[np.ndarray, np.ndarray]:
    """Sample indices ordered by action (batch order within an action) and each action's
    start in that order (``starts[A]`` = B): a counting sort, checking every action."""
    B = actions_B.shape[0]
    starts = np.zeros(A + 1, dtype=np.int64)
    for b in range(B):
        a = actions_B[b]
        if a < 0 or a >= A:
            raise IndexError("an action index is outside the network's actions")
        starts[a + 1] += 1
    for a in range(A):
        starts[a + 1] += starts[a]
    fill = starts[:A].copy()
    order = np.empty(B, dtype=np.int64)
    for b in range(B):
        a = actions_B[b]
        order[fill[a]] = b
        fill[a] += 1
    return order, starts


# The taken-action kernels work through the samples of one action at a time, four at once: the
# action's Z x H block (26 KB at Z = 51, H = 128) stays in L1 while it serves them, and each row
# of it read (forward, grad_h) or updated (grad_w) serves four samples instead of one. In the
# forward a block's missing samples repeat its last one (computed again, written once); the
# backward does an action's last 0-3 samples one at a time. Every dot product runs the same
# compiled loop whichever block it is in, so a sample's output does not depend on the others in
# the batch.


@numba.njit(cache=True, fastmath=_FASTMATH)
def taken_linear_forward(
    h_BH: np.ndarray, weight_AZH: np.ndarray, bias_AZ: np.ndarray, actions_B: np.ndarray,
    out_BZ: np.ndarray,
) -> None:  # fmt: skip
    """out_BZ[b] = weight_AZH[a_b] @ h_BH[b] + bias_AZ[a_b]."""
    H = h_BH.shape[1]
    A, Z, _ = weight_AZH.shape
    order, starts = _group_by_action(actions_B, A)
    for a in range(A):
        i, end = starts[a], starts[a + 1]
        while i < end:
            last = end - 1
            b0, b1 = order[i], order[min(i + 1, last)]
            b2, b3 = order[min(i + 2, last)], order[min(i + 3, last)]
            h0, h1, h2, h3 = h_BH[b0], h_BH[b1], h_BH[b2], h_BH[b3]
            for z0 in range(0, Z, 2):  # two output rows per pass: 8 dot products
                z1 = min(z0 + 1, Z - 1)
                w0, w1 = weight_AZH[a, z0], weight_AZH[a, z1]
                s0 = s1 = s2 = s3 = t0 = t1 = t2 = t3 = np.float32(0.0)
                for k in range(H):
                    x, y = w0[k], w1[k]
                    s0 += h0[k] * x
                    s1 += h1[k] * x
                    s2 += h2[k] * x
                    s3 += h3[k] * x
                    t0 += h0[k] * y
                    t1 += h1[k] * y
                    t2 += h2[k] * y
                    t3 += h3[k] * y
                c0, c1 = bias_AZ[a, z0], bias_AZ[a, z1]
                out_BZ[b0, z0], out_BZ[b0, z1] = s0 + c0, t0 + c1
                out_BZ[b1, z0], out_BZ[b1, z1] = s1 + c0, t1 + c1
                out_BZ[b2, z0], out_BZ[b2, z1] = s2 + c0, t2 + c1
                out_BZ[b3, z0], out_BZ[b3, z1] = s3 + c0, t3 + c1
            i += 4


@numba.njit(cache=True, fastmath=_FASTMATH)
def taken_linear_backward(
    grad_BZ: np.ndarray, h_BH: np.ndarray, weight_AZH: np.ndarray, actions_B: np.ndarray,
    grad_h_BH: np.ndarray, grad_w_AZH: np.ndarray, grad_b_AZ: np.ndarray,
) -> None:  # fmt: skip
    """Gradients of :func:`taken_linear_forward`; grad_w/grad_b must start at zero.

    They accumulate over each action's samples in batch order, four at a time, so the result
    is deterministic. Two passes per block of four: the weight rows' gradient (each row read
    and written once for the four samples), then the four samples' ``grad_h`` rows, summed in
    a small local block over two weight rows at a time and written once (rather than read
    and written for every weight row).
    """
    H = h_BH.shape[1]
    A, Z, _ = weight_AZH.shape
    order, starts = _group_by_action(actions_B, A)
    block_4H = np.empty((4, H), dtype=np.float32)
    d0, d1, d2, d3 = block_4H[0], block_4H[1], block_4H[2], block_4H[3]
    for a in range(A):
        i, end = starts[a], starts[a + 1]
        while i + 4 <= end:
            b0, b1, b2, b3 = order[i], order[i + 1], order[i + 2], order[i + 3]
            h0, h1, h2, h3 = h_BH[b0], h_BH[b1], h_BH[b2], h_BH[b3]
            for z in range(Z):
                g0, g1, g2, g3 = grad_BZ[b0, z], grad_BZ[b1, z], grad_BZ[b2, z], grad_BZ[b3, z]
                grad_b_AZ[a, z] += g0 + g1 + g2 + g3
                gw = grad_w_AZH[a, z]
                for k in range(H):
                    gw[k] += g0 * h0[k] + g1 * h1[k] + g2 * h2[k] + g3 * h3[k]
            block_4H[:] = 0.0
            for z0 in range(0, Z - 1, 2):
                z1 = z0 + 1
                g0, g1, g2, g3 = grad_BZ[b0, z0], grad_BZ[b1, z0], grad_BZ[b2, z0], grad_BZ[b3, z0]
                e0, e1, e2, e3 = grad_BZ[b0, z1], grad_BZ[b1, z1], grad_BZ[b2, z1], grad_BZ[b3, z1]
                w, v = weight_AZH[a, z0], weight_AZH[a, z1]
                for k in range(H):
                    wk, vk = w[k], v[k]
                    d0[k] += g0 * wk + e0 * vk
                    d1[k] += g1 * wk + e1 * vk
                    d2[k] += g2 * wk + e2 * vk
                    d3[k] += g3 * wk + e3 * vk
            if Z % 2 == 1:  # the last weight row on its own
                z = Z - 1
                g0, g1, g2, g3 = grad_BZ[b0, z], grad_BZ[b1, z], grad_BZ[b2, z], grad_BZ[b3, z]
                w = weight_AZH[a, z]
                for k in range(H):
                    wk = w[k]
                    d0[k] += g0 * wk
                    d1[k] += g1 * wk
                    d2[k] += g2 * wk
                    d3[k] += g3 * wk
            grad_h_BH[b0], grad_h_BH[b1], grad_h_BH[b2], grad_h_BH[b3] = d0, d1, d2, d3
            i += 4
        while i < end:  # the last 0-3 samples of the action, one at a time
            b = order[i]
            hb, db = h_BH[b], grad_h_BH[b]
            db[:] = 0.0
            for z in range(Z):
                g = grad_BZ[b, z]
                grad_b_AZ[a, z] += g
                w, gw = weight_AZH[a, z], grad_w_AZH[a, z]
                for k in range(H):
                    gw[k] += g * hb[k]
                    db[k] += g * w[k]
            i += 1


@numba.njit(cache=True, inline="always")
def _project_row(
    probs_Z: np.ndarray, reward: np.float32, shift: np.float32, support_Z: np.ndarray,
    lowest: np.float32, inv_dz: np.float32, out_Z: np.ndarray,
) -> None:  # fmt: skip
    # losses.project_distribution for one row, in the same float32 steps.
    Z = probs_Z.shape[0]
    zero, top = np.float32(0.0), np.float32(Z - 1)
    offset = reward - lowest
    out_Z[:] = 0.0
    for j in range(Z):
        pos = min(max((offset + shift * support_Z[j]) * inv_dz, zero), top)
        lower = min(np.int64(np.floor(pos)), Z - 2)
        upper_mass = probs_Z[j] * (pos - np.float32(lower))
        out_Z[lower] += probs_Z[j] - upper_mass
        out_Z[lower + 1] += upper_mass


@numba.njit(cache=True)
def project(
    next_probs_BZ: np.ndarray, rewards_B: np.ndarray, discounts_B: np.ndarray,
    terminated_B: np.ndarray, support_Z: np.ndarray, v_min: float, delta_z: float,
    out_BZ: np.ndarray,
) -> None:  # fmt: skip
    """losses.project_distribution into out_BZ."""
    lowest, inv_dz = np.float32(v_min), np.float32(1.0 / delta_z)
    for b in range(next_probs_BZ.shape[0]):
        shift = discounts_B[b] * (np.float32(1.0) - terminated_B[b])
        _project_row(next_probs_BZ[b], rewards_B[b], shift, support_Z, lowest, inv_dz, out_BZ[b])


@numba.njit(cache=True, inline="always")
def _argmax(q_A: np.ndarray) -> int:
    """Index of the first maximum, or of the first NaN where there is one (torch's argmax)."""
    best_a, best_q = 0, q_A[0]
    for a in range(1, q_A.shape[0]):
        if best_q != best_q:
            break
        if q_A[a] > best_q or q_A[a] != q_A[a]:
            best_a, best_q = a, q_A[a]
    return best_a


@numba.njit(cache=True, fastmath=_FASTMATH)
def greedy_project(
    next_probs_BAZ: np.ndarray, rewards_B: np.ndarray, discounts_B: np.ndarray,
    terminated_B: np.ndarray, support_Z: np.ndarray, v_min: float, delta_z: float,
    out_BZ: np.ndarray,
) -> None:  # fmt: skip
    """losses.greedy_projected_target: a* = argmax_a sum_z p z (as :func:`_argmax` picks it),
    projected."""
    B, A, Z = next_probs_BAZ.shape
    lowest, inv_dz = np.float32(v_min), np.float32(1.0 / delta_z)
    q_A = np.empty(A, dtype=np.float32)
    for b in range(B):
        for a in range(A):
            q = np.float32(0.0)
            for z in range(Z):
                q += next_probs_BAZ[b, a, z] * support_Z[z]
            q_A[a] = q
        best_a = _argmax(q_A)
        shift = discounts_B[b] * (np.float32(1.0) - terminated_B[b])
        _project_row(
            next_probs_BAZ[b, best_a], rewards_B[b], shift, support_Z, lowest, inv_dz, out_BZ[b]
        )


# ---------------------------------------------------------------- softmax-based C51 kernels
# The C51 target needs the exp of every logit (B * A * Z of them), the loss B * Z. numba calls
# libm's scalar expf (slower than torch's whole softmax at these sizes); exp32 below is
# branch-free float32 arithmetic that LLVM vectorises, about ten times faster, to ~1 ulp.


# exp32 is inlined (numba IR) into its callers and compiled with their flags, whatever it
# declares itself: every caller here has _FASTMATH, so it is declared with the same.
@numba.njit(cache=True, inline="always", fastmath=_FASTMATH)
def exp32(x: np.float32) -> np.float32:
    """exp(x) for float32 x <= 0 (what softmax exponentiates after subtracting the maximum).

    Cephes' expf: x = n ln2 + r with |r| <= ln2 / 2 (ln2 in two parts), a degree-7 polynomial
    for exp(r), and 2**n built in the exponent bits. Below -87 (under float32's smallest normal
    number) the result is 0; a NaN stays NaN.
    """
    xc = max(x, np.float32(-87.0))
    n = np.floor(xc * np.float32(1.4426950408889634) + np.float32(0.5))
    r = xc - n * np.float32(0.693359375)
    r = r + n * np.float32(2.12194440e-4)
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    y = p * r * r + r + np.float32(1.0)
    scale = np.int32((np.int32(n) + np.int32(127)) << np.int32(23)).view(np.float32)
    out = y * scale
    if x < np.float32(-87.0):
        out = np.float32(0.0)
    if x != x:
        out = x
    return out


@numba.njit(cache=True, inline="always", fastmath=_FASTMATH)
def _softmax_sample(logits_AZ: np.ndarray, support_Z: np.ndarray, e_AZ: np.ndarray,
                    sums_A: np.ndarray, q_A: np.ndarray) -> None:  # fmt: skip
    """For each action a of one sample: e_AZ[a] = exp(logits - shift_a) (unnormalised
    softmax), sums_A[a] = its sum and q_A[a] = sum_z softmax z (the expected value).

    The shift cancels in the ratios; it only has to keep the exponentials in float32's range.
    The sample's first logit serves every row, so the exponentials run as one vectorised loop
    over A * Z values with no search for the maximum first. A row that comes out outside
    [1e-30, 1e30] (its logits more than ~69 from that first one) is redone shifted by its own
    maximum, which makes it exactly the usual max-shifted softmax.
    """
    A, Z = logits_AZ.shape
    flat_l, flat_e = logits_AZ.reshape(A * Z), e_AZ.reshape(A * Z)
    shift = flat_l[0]
    for j in range(A * Z):
        flat_e[j] = exp32(min(flat_l[j] - shift, np.float32(88.0)))
    for a in range(A):
        s, q = np.float32(0.0), np.float32(0.0)
        for z in range(Z):
            s += e_AZ[a, z]
            q += e_AZ[a, z] * support_Z[z]
        if not (np.float32(1e-30) <= s <= np.float32(1e30)):
            row_max = logits_AZ[a, 0]
            for z in range(1, Z):
                row_max = max(row_max, logits_AZ[a, z])
            s, q = np.float32(0.0), np.float32(0.0)
            for z in range(Z):
                e = exp32(logits_AZ[a, z] - row_max)
                e_AZ[a, z] = e
                s += e
                q += e * support_Z[z]
        sums_A[a] = s
        q_A[a] = q / s


@numba.njit(cache=True, fastmath=_FASTMATH)
def softmax_greedy_project(
    next_logits_BAZ: np.ndarray, rewards_B: np.ndarray, discounts_B: np.ndarray,
    terminated_B: np.ndarray, support_Z: np.ndarray, v_min: float, delta_z: float,
    out_BZ: np.ndarray,
) -> None:  # fmt: skip
    """losses.greedy_projected_target of softmax(next_logits_BAZ) along Z, without storing it.

    a* = argmax_a sum_z p(a, z) z (first on ties; a NaN expected value wins, as in torch's
    argmax, so a diverged network's target is NaN for the loss's guard to see).
    """
    B, A, Z = next_logits_BAZ.shape
    lowest, inv_dz = np.float32(v_min), np.float32(1.0 / delta_z)
    e_AZ = np.empty((A, Z), dtype=np.float32)
    sums_A = np.empty(A, dtype=np.float32)
    q_A = np.empty(A, dtype=np.float32)
    for b in range(B):
        _softmax_sample(next_logits_BAZ[b], support_Z, e_AZ, sums_A, q_A)
        best_a = _argmax(q_A)
        inv = np.float32(1.0) / sums_A[best_a]
        for z in range(Z):
            e_AZ[best_a, z] *= inv
        shift = discounts_B[b] * (np.float32(1.0) - terminated_B[b])
        _project_row(e_AZ[best_a], rewards_B[b], shift, support_Z, lowest, inv_dz, out_BZ[b])


@numba.njit(cache=True, fastmath=_FASTMATH)
def c51_cross_entropy(
    logits_BZ: np.ndarray, target_BZ: np.ndarray, support_Z: np.ndarray, weights_B: np.ndarray,
    probs_BZ: np.ndarray, per_sample_B: np.ndarray, q_B: np.ndarray,
) -> float:  # fmt: skip
    """The forward of losses.c51_taken_loss: per_sample_B = -sum_z target * log softmax(logits),
    probs_BZ = softmax(logits), q_B = probs @ support; returns the mean over the batch of
    weights_B * per_sample_B (weights 1 when ``weights_B`` is empty), summed in float64."""
    B, Z = logits_BZ.shape
    total = 0.0
    for b in range(B):
        logits, probs, target = logits_BZ[b], probs_BZ[b], target_BZ[b]
        top = logits[0]
        for z in range(1, Z):
            top = max(top, logits[z])
        mass = np.float32(0.0)
        for z in range(Z):
            e = exp32(logits[z] - top)
            probs[z] = e
            mass += e
        log_sum = top + np.float32(np.log(mass))
        inv = np.float32(1.0) / mass
        ce, q = np.float32(0.0), np.float32(0.0)
        for z in range(Z):
            ce += target[z] * (log_sum - logits[z])
            probs[z] *= inv
            q += probs[z] * support_Z[z]
        per_sample_B[b], q_B[b] = ce, q
        weight = weights_B[b] if weights_B.shape[0] > 0 else np.float32(1.0)
        total += np.float64(weight) * np.float64(ce)
    return total / B


@numba.njit(cache=True, fastmath=_FASTMATH)
def c51_cross_entropy_backward(
    grad_loss: float, probs_BZ: np.ndarray, target_BZ: np.ndarray, weights_B: np.ndarray,
    grad_BZ: np.ndarray,
) -> None:  # fmt: skip
    """d loss / d logits of :func:`c51_cross_entropy`: grad_loss * w_b / B *
    (probs * sum_z target - target)."""
    B, Z = probs_BZ.shape
    for b in range(B):
        weight = weights_B[b] if weights_B.shape[0] > 0 else np.float32(1.0)
        scale = np.float32(grad_loss * weight / B)
        probs, target = probs_BZ[b], target_BZ[b]
        mass = np.float32(0.0)
        for z in range(Z):
            mass += target[z]
        for z in range(Z):
            grad_BZ[b, z] = scale * (probs[z] * mass - target[z])


# ------------------------------------------------------------- the fused C51 online head
# The learner's online side of a C51 step is the taken-action layer, then the cross-entropy.
# These run both in one call each way (as two autograd functions they cost two graph nodes,
# two sets of array views and the [B, Z] logits' gradient as a torch tensor in between), and
# c51_head_loss_and_grads runs both ways in one call (compiled_head.c51_head_loss).


@numba.njit(cache=True, fastmath=_FASTMATH)
def c51_head_forward(
    h_BH: np.ndarray, weight_AZH: np.ndarray, bias_AZ: np.ndarray, actions_B: np.ndarray,
    value_BZ: np.ndarray, target_BZ: np.ndarray, support_Z: np.ndarray, weights_B: np.ndarray,
    logits_BZ: np.ndarray, probs_BZ: np.ndarray, per_sample_B: np.ndarray, q_B: np.ndarray,
) -> float:  # fmt: skip
    """:func:`taken_linear_forward` into ``logits_BZ``, plus ``value_BZ`` where it is not
    empty (the dueling stream, added as torch's ``+`` would), then :func:`c51_cross_entropy`."""
    taken_linear_forward(h_BH, weight_AZH, bias_AZ, actions_B, logits_BZ)
    if value_BZ.shape[0] > 0:
        B, Z = logits_BZ.shape
        for b in range(B):
            for z in range(Z):
                logits_BZ[b, z] = logits_BZ[b, z] + value_BZ[b, z]
    return c51_cross_entropy(
        logits_BZ, target_BZ, support_Z, weights_B, probs_BZ, per_sample_B, q_B
    )


@numba.njit(cache=True, fastmath=_FASTMATH)
def c51_head_backward(
    grad_loss: float, probs_BZ: np.ndarray, target_BZ: np.ndarray, weights_B: np.ndarray,
    h_BH: np.ndarray, weight_AZH: np.ndarray, actions_B: np.ndarray, grad_BZ: np.ndarray,
    grad_h_BH: np.ndarray, grad_w_AZH: np.ndarray, grad_b_AZ: np.ndarray,
) -> None:  # fmt: skip
    """Gradients of :func:`c51_head_forward`: the logits' into ``grad_BZ`` (also the dueling
    stream's), then the taken-action layer's; grad_w/grad_b need not start at zero."""
    c51_cross_entropy_backward(grad_loss, probs_BZ, target_BZ, weights_B, grad_BZ)
    grad_w_AZH[:] = 0.0
    grad_b_AZ[:] = 0.0
    taken_linear_backward(grad_BZ, h_BH, weight_AZH, actions_B, grad_h_BH, grad_w_AZH, grad_b_AZ)


@numba.njit(cache=True, fastmath=_FASTMATH)
def c51_head_loss_and_grads(
    h_BH: np.ndarray, weight_AZH: np.ndarray, bias_AZ: np.ndarray, actions_B: np.ndarray,
    value_BZ: np.ndarray, target_BZ: np.ndarray, support_Z: np.ndarray, weights_B: np.ndarray,
    logits_BZ: np.ndarray, probs_BZ: np.ndarray, per_sample_B: np.ndarray, q_B: np.ndarray,
    grad_BZ: np.ndarray, grad_h_BH: np.ndarray, grad_w_AZH: np.ndarray, grad_b_AZ: np.ndarray,
) -> float:  # fmt: skip
    """:func:`c51_head_forward`, then :func:`c51_head_backward` of the loss itself (gradient 1)
    in the same call: what the learner needs of the head in one step."""
    loss = c51_head_forward(
        h_BH, weight_AZH, bias_AZ, actions_B, value_BZ, target_BZ, support_Z, weights_B,
        logits_BZ, probs_BZ, per_sample_B, q_B,
    )  # fmt: skip
    c51_head_backward(
        1.0, probs_BZ, target_BZ, weights_B, h_BH, weight_AZH, actions_B, grad_BZ, grad_h_BH,
        grad_w_AZH, grad_b_AZ,
    )  # fmt: skip
    return loss


@numba.njit(cache=True, fastmath=_FASTMATH)
def c51_greedy(logits_NAZ: np.ndarray, support_Z: np.ndarray, actions_N: np.ndarray) -> None:
    """argmax_a sum_z softmax(logits)[a, z] z per row into ``actions_N``, as torch's argmax
    of the expected Q: the first maximum, or the first NaN where there is one."""
    N, A, Z = logits_NAZ.shape
    e_AZ = np.empty((A, Z), dtype=np.float32)
    sums_A = np.empty(A, dtype=np.float32)
    q_A = np.empty(A, dtype=np.float32)
    for n in range(N):
        _softmax_sample(logits_NAZ[n], support_Z, e_AZ, sums_A, q_A)
        actions_N[n] = _argmax(q_A)
