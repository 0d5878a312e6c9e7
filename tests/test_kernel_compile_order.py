"""Compiled kernels give the same numbers whatever order they were first compiled in.

numba compiles a kernel called from another kernel with the flags of whichever caller compiled
it first, and caches that variant (numba issue #7168): a fastmath caller compiled before a plain
one changed the plain one's results. With a warm cache the order was set by whatever ran before
(the test suite, another command), so the same seed could train differently on two machines.
Every kernel here is run in two fresh processes, each with its own empty numba cache, one
compiling them in the listed order and one in reverse, and the outputs must be bit-identical.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# Each entry calls one kernel of nexlify.agent.cpu_kernels or nexlify.agent.sum_tree on fixed
# inputs and returns its outputs as float64 lists.
_SCRIPT = r"""
import json, sys
import numpy as np
from nexlify.agent import cpu_kernels as ck, sum_tree as st

rng = np.random.default_rng(0)
B, H, A, Z = 64, 40, 7, 51
f32 = np.float32
h = rng.standard_normal((B, H), dtype=f32)
W = rng.standard_normal((A, Z, H), dtype=f32) * f32(0.3)
bias = rng.standard_normal((A, Z), dtype=f32)
acts = rng.integers(0, A, B)
sup = np.linspace(-10, 10, Z).astype(f32)
w = rng.random(B).astype(f32)
tg = rng.random((B, Z)).astype(f32)
tg /= tg.sum(axis=1, keepdims=True)
logits = (rng.standard_normal((B, A, Z)) * 3).astype(f32)
probs = np.exp(logits.astype(np.float64))
probs = (probs / probs.sum(axis=2, keepdims=True)).astype(f32)
r = (rng.standard_normal(B) * 4).astype(f32)
d = np.full(B, 0.97, f32)
term = (rng.random(B) < 0.2).astype(f32)
none = np.empty(0, f32)
nothing = np.empty((0, 0), f32)
g = rng.standard_normal((B, Z), dtype=f32)


def out(*arrays):
    return np.concatenate([np.ravel(np.asarray(x, dtype=np.float64)) for x in arrays]).tolist()


def project():
    o = np.empty((B, Z), f32)
    ck.project(probs[:, 0].copy(), r, d, term, sup, -10.0, 0.4, o)
    return out(o)


def greedy_project():
    o = np.empty((B, Z), f32)
    ck.greedy_project(probs, r, d, term, sup, -10.0, 0.4, o)
    return out(o)


def softmax_greedy_project():
    o = np.empty((B, Z), f32)
    ck.softmax_greedy_project(logits, r, d, term, sup, -10.0, 0.4, o)
    return out(o)


def taken_linear():
    o = np.empty((B, Z), f32)
    ck.taken_linear_forward(h, W, bias, acts, o)
    gh, gw, gb = np.empty((B, H), f32), np.zeros((A, Z, H), f32), np.zeros((A, Z), f32)
    ck.taken_linear_backward(g, h, W, acts, gh, gw, gb)
    return out(o, gh, gw, gb)


def cross_entropy():
    p, ps, q, gz = np.empty((B, Z), f32), np.empty(B, f32), np.empty(B, f32), np.empty((B, Z), f32)
    loss = ck.c51_cross_entropy(logits[:, 0].copy(), tg, sup, w, p, ps, q)
    ck.c51_cross_entropy_backward(1.0, p, tg, w, gz)
    return out(p, ps, q, gz, [loss])


def head():
    lg, p = np.empty((B, Z), f32), np.empty((B, Z), f32)
    ps, q = np.empty(B, f32), np.empty(B, f32)
    loss = ck.c51_head_forward(h, W, bias, acts, logits[:, 1].copy(), tg, sup, w, lg, p, ps, q)
    gz, gh = np.empty((B, Z), f32), np.empty((B, H), f32)
    gw, gb = np.empty((A, Z, H), f32), np.empty((A, Z), f32)
    ck.c51_head_backward(0.5, p, tg, none, h, W, acts, gz, gh, gw, gb)
    return out(lg, p, ps, q, [loss], gz, gh, gw, gb)


def head_loss_and_grads():
    lg, p = np.empty((B, Z), f32), np.empty((B, Z), f32)
    ps, q = np.empty(B, f32), np.empty(B, f32)
    gz, gh = np.empty((B, Z), f32), np.empty((B, H), f32)
    gw, gb = np.empty((A, Z, H), f32), np.empty((A, Z), f32)
    loss = ck.c51_head_loss_and_grads(h, W, bias, acts, nothing, tg, sup, w, lg, p, ps, q, gz,
                                      gh, gw, gb)
    return out(lg, p, ps, q, [loss], gz, gh, gw, gb)


def greedy():
    o = np.empty(B, np.int64)
    ck.c51_greedy(logits, sup, o)
    return out(o)


def sum_tree():
    tree = st.SumTree(1000)
    tree.set(np.arange(1000), rng.random(1000))
    sampler = st.PrioritizedSampler(125, 8, 0.6, 1e-6)
    for row in range(125):
        sampler.on_add(row)
    idx, weights = sampler.sample_indices(64, np.random.default_rng(1))
    sampler.update_priorities(idx, rng.standard_normal(64).astype(f32))
    return out(tree.find(np.linspace(0, tree.total * 0.999, 50)), idx, weights, sampler.tree.nodes)


kernels = [project, greedy_project, softmax_greedy_project, taken_linear, cross_entropy, head,
           head_loss_and_grads, greedy, sum_tree]
order = kernels if sys.argv[1] == "forward" else kernels[::-1]
print(json.dumps({k.__name__: k() for k in order}))
"""


def _outputs(order: str, cache_dir: Path) -> dict[str, list[float]]:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir)}
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, order], env=env, capture_output=True, text=True,
        timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, list[float]] = json.loads(done.stdout.splitlines()[-1])
    return result


@pytest.mark.slow
def test_kernel_results_do_not_depend_on_which_kernel_was_compiled_first(
    tmp_path: Path,
) -> None:
    forward = _outputs("forward", tmp_path / "forward")
    backward = _outputs("reverse", tmp_path / "reverse")
    assert forward.keys() == backward.keys()
    differ = [name for name in forward if not np.array_equal(forward[name], backward[name])]
    assert not differ, f"kernels whose results depend on compile order: {differ}"
