"""Software prefetch of the per-bar rows the next envs will read (compiled, for the step kernels).

Each env reads the market tables (features, prices, the day index and, with strategies, the
per-bar series and arbitrage table) at its *own* bar, so one step reads rows
scattered over tables of several MB: the per-env state arrays stream in env order and the
hardware prefetchers follow them, but these rows are a cache miss each, paid one after another
because an env's step is too long for the CPU to look ahead into the next env's loads. The step
loops therefore ask for the rows of env ``n + PREFETCH_DISTANCE`` while stepping env ``n``.

``benchmarks/bench_env_ab.py`` measures its effect (old and new code alternately); it is largest
when the machine's memory is contended.

A prefetch is a hint: it never faults, changes no value and is dropped by CPUs without one
(``llvm.prefetch``; x86 ``prefetcht0``, ARM ``prfm``). Row indices are still clamped to the
table so that no address outside it is formed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

PREFETCH_DISTANCE = 8
"""How many envs ahead the step loops prefetch (4 to 8 measured best; 2 and 16 worse)."""

_LINE = 64


@intrinsic
def _prefetch_byte(typingctx: Any, arr: Any, row: Any, offset: Any) -> Any:
    """Prefetch (for reading, into every cache level) the byte ``offset`` past ``arr[row, 0]``."""
    if not isinstance(arr, types.Array):
        return None
    sig = types.void(arr, row, offset)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        array_type = signature.args[0]
        array = context.make_array(array_type)(context, builder, args[0])
        zero = context.get_constant(types.intp, 0)
        first = context.cast(builder, args[1], signature.args[1], types.intp)
        index = [first] + [zero] * (array_type.ndim - 1)
        ptr = cgutils.get_item_pointer(context, builder, array_type, array, index)
        byte_ptr_type = ir.IntType(8).as_pointer()
        byte_ptr = builder.bitcast(ptr, byte_ptr_type)
        byte_ptr = builder.gep(byte_ptr, [context.cast(builder, args[2], signature.args[2],
                                                       types.intp)])  # fmt: skip
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [byte_ptr_type, i32, i32, i32])
        fn = builder.module.declare_intrinsic("llvm.prefetch", [byte_ptr_type], fnty)
        # (address, 0 = read, 3 = keep in all cache levels, 1 = data cache)
        builder.call(fn, [byte_ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, inline="always")
def prefetch_rows(table: np.ndarray, first: int, count: int) -> None:
    """Prefetch the bytes of rows ``[first, first + count)`` of a table, rows clamped to the
    table (meant for C-contiguous tables; for others it prefetches less, never outside)."""
    n_rows = table.shape[0]
    if n_rows == 0 or table.strides[0] <= 0:
        return
    lo = min(max(first, 0), n_rows - 1)
    hi = min(max(first + count, lo + 1), n_rows)
    span = (hi - lo) * table.strides[0]
    for offset in range(0, span, _LINE):
        _prefetch_byte(table, lo, offset)  # type: ignore[call-arg]  # (typingctx is numba's)
    # The last line, when the span is not line-aligned.
    _prefetch_byte(table, lo, span - 1)  # type: ignore[call-arg]
