"""Explicit vector code for the dot-product form of the nearest-centre search, for wide rows.

||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2: ranking centres by ||c||^2 - 2 x.c costs one fused
multiply-add per feature and centre, against a subtraction and a multiply-add for (x - c)^2, and
its sums are independent chains that keep both multiply-add units busy. `product_rows` computes
it for four rows against sixteen (float32) or eight (float64) centres per step, packed as in
engine/simd.py, and keeps per row the smallest value, its centre, and the second smallest: the
gap between the two tells engine/wide.py whether rounding could have changed the answer.

This form cancels (||x||^2 and ||c||^2 are large where x - c is small) and rounds differently
from the exact kernel, so it never decides alone; see engine/wide.py.

Numba's on-disk cache keys the kernels of engine/kernels.py on that file alone: after editing
this one, touch engine/kernels.py (or delete engine/__pycache__) so that they are rebuilt.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .simd import arrays_of, rotate, splat

# Centres per vector: sixteen float32 fill one AVX-512 register (two AVX2 registers elsewhere).
LANES = 16
# Rows per call: each load of centres serves eight rows.
ROWS = 8


@njit(cache=True)
def product_blocks(C):
    """Centres as (2 * ceil(k / (2 LANES)), d, LANES) blocks (an even count: float32 steps
    through two at once) and their squared norms as (blocks, LANES); missing lanes have
    coordinates 0 and norm +inf, so that they are never nearest."""
    k, d = C.shape
    n_blocks = 2 * ((k + 2 * LANES - 1) // (2 * LANES))
    blocks = np.zeros((n_blocks, d, LANES), C.dtype)
    norms = np.full((n_blocks, LANES), np.inf, C.dtype)
    for j in range(k):
        s = 0.0
        for t in range(d):
            blocks[j // LANES, t, j % LANES] = C[j, t]
            s += np.float64(C[j, t]) * np.float64(C[j, t])
        norms[j // LANES, j % LANES] = s
    return blocks, norms


def _min_lanes(builder: ir.IRBuilder, vec: ir.Value) -> ir.Value:
    """Every lane set to the smallest lane of `vec` (ordered: a NaN lane is never chosen)."""
    low = vec
    for shift in _SHIFTS:
        other = rotate(builder, low, shift)
        low = builder.select(builder.fcmp_ordered("<", other, low), other, low)
    return low


_SHIFTS = tuple(LANES >> s for s in range(1, LANES.bit_length()))


@intrinsic
def product_rows(typingctx, X, i0, blocks, norms, out_best, out_second, out_label):
    """For rows i0 .. i0 + ROWS - 1 of X (any layout): the smallest ||c||^2 - 2 x.c into
    out_best, the index of its centre into out_label (int32; ties to the lower index), and the
    second smallest over the other centres into out_second. `blocks` and `norms` come from
    `product_blocks`, in X's dtype."""
    if not (
        isinstance(X, types.Array)
        and arrays_of(X.dtype, (X, 2), (blocks, 3), (norms, 2), (out_best, 1), (out_second, 1))
        and arrays_of(types.int32, (out_label, 1))
    ):
        return None
    sig = types.void(X, i0, blocks, norms, out_best, out_second, out_label)
    # Two vectors of float32 per row (eight accumulators in all) but one of float64, whose
    # LANES already fill two registers: more would spill.
    step = 2 if X.dtype == types.float32 else 1

    def codegen(context, builder, signature, args):
        x_t, i_t, c_t, n_t, b_t, s_t, j_t = signature.args
        xa = context.make_array(x_t)(context, builder, args[0])
        ca = context.make_array(c_t)(context, builder, args[2])
        na = context.make_array(n_t)(context, builder, args[3])
        outs = [
            context.make_array(t)(context, builder, a)
            for t, a in zip((b_t, s_t, j_t), args[4:], strict=True)
        ]
        intp = context.get_value_type(types.intp)
        i32 = ir.IntType(32)
        ftype = context.get_value_type(x_t.dtype)
        fvec = ir.VectorType(ftype, LANES)
        ivec = ir.VectorType(i32, LANES)
        align = context.get_abi_alignment(ftype)
        first = context.cast(builder, args[1], i_t, types.intp)
        d = cgutils.unpack_tuple(builder, xa.shape, 2)[1]
        row_stride, col_stride = cgutils.unpack_tuple(builder, xa.strides, 2)
        n_steps = builder.udiv(cgutils.unpack_tuple(builder, ca.shape, 3)[0], intp(step))
        x_bytes = builder.bitcast(xa.data, ir.IntType(8).as_pointer())
        rows = [
            builder.gep(x_bytes, [builder.mul(builder.add(first, intp(r)), row_stride)])
            for r in range(ROWS)
        ]
        inf = ir.Constant(fvec, [ir.Constant(ftype, float("inf"))] * LANES)
        zero = ir.Constant(fvec, [ir.Constant(ftype, 0.0)] * LANES)
        best = [cgutils.alloca_once_value(builder, inf) for _ in range(ROWS)]
        second = [cgutils.alloca_once_value(builder, inf) for _ in range(ROWS)]
        best_block = [cgutils.alloca_once_value(builder, ivec([0] * LANES)) for _ in range(ROWS)]
        acc = [[cgutils.alloca_once(builder, fvec) for _ in range(step)] for _ in range(ROWS)]

        with cgutils.for_range(builder, n_steps) as step_loop:
            b0 = builder.mul(step_loop.index, intp(step))
            for r in range(ROWS):
                for s in range(step):
                    builder.store(zero, acc[r][s])
            block0 = builder.gep(ca.data, [builder.mul(b0, builder.mul(d, intp(LANES)))])
            with cgutils.for_range(builder, d) as feature_loop:
                t = feature_loop.index
                centres = []
                for s in range(step):
                    offset = builder.add(
                        builder.mul(intp(s), builder.mul(d, intp(LANES))),
                        builder.mul(t, intp(LANES)),
                    )
                    cptr = builder.gep(block0, [offset])
                    centres.append(
                        builder.load(builder.bitcast(cptr, fvec.as_pointer()), align=align)
                    )
                offset = builder.mul(t, col_stride)
                for r in range(ROWS):
                    xptr = builder.bitcast(builder.gep(rows[r], [offset]), ftype.as_pointer())
                    x = splat(builder, fvec, builder.load(xptr))
                    for s in range(step):
                        prod = builder.fmul(x, centres[s], flags=("contract",))
                        total = builder.fadd(builder.load(acc[r][s]), prod, flags=("contract",))
                        builder.store(total, acc[r][s])
            for s in range(step):
                b = builder.add(b0, intp(s))
                nptr = builder.gep(na.data, [builder.mul(b, intp(LANES))])
                norm = builder.load(builder.bitcast(nptr, fvec.as_pointer()), align=align)
                ids = splat(builder, ivec, builder.trunc(b, i32))
                for r in range(ROWS):
                    dot = builder.load(acc[r][s])
                    value = builder.fsub(norm, builder.fadd(dot, dot))
                    kept = builder.load(best[r])
                    closer = builder.fcmp_ordered("<", value, kept)  # false for NaN
                    other = builder.load(second[r])
                    other = builder.select(builder.fcmp_ordered("<", value, other), value, other)
                    builder.store(builder.select(closer, kept, other), second[r])
                    builder.store(builder.select(closer, value, kept), best[r])
                    builder.store(
                        builder.select(closer, ids, builder.load(best_block[r])), best_block[r]
                    )

        lane_ids = ivec(list(range(LANES)))
        no_index = ivec([2**31 - 1] * LANES)
        for r in range(ROWS):
            lanes = builder.load(best[r])
            low = _min_lanes(builder, lanes)
            ids = builder.add(
                builder.mul(builder.load(best_block[r]), ivec([LANES] * LANES)), lane_ids
            )
            index = builder.select(builder.fcmp_ordered("==", lanes, low), ids, no_index)
            for shift in _SHIFTS:
                other = rotate(builder, index, shift)
                index = builder.select(builder.icmp_signed("<", other, index), other, index)
            # The runner-up: every lane's second, and the best of every lane but the winner's.
            kept = builder.load(second[r])
            lower = builder.select(builder.fcmp_ordered("<", lanes, kept), lanes, kept)
            runner = builder.select(builder.icmp_signed("==", ids, index), kept, lower)
            runner = _min_lanes(builder, runner)
            for out, value in zip(outs, (low, runner, index), strict=True):
                builder.store(
                    builder.extract_element(value, i32(0)), builder.gep(out.data, [intp(r)])
                )
        return context.get_dummy_value()

    return sig, codegen
