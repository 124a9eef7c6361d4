"""Explicit vector code for the nearest-centre search, as a Numba intrinsic.

Numba leaves the obvious loops scalar or vectorises them along the wrong axis when rows are short
(a handful of features): the loop along a row's features is too short for the vectoriser, and
eight scalar accumulators, one per centre, are not packed into a vector register. `nearest_rows`
writes the packed form in LLVM IR directly: eight centres side by side in one vector (LLVM
lowers it to the widest registers the CPU has), four rows at once, so that per feature one load of
eight centre coordinates serves four rows. Squared distances are summed feature by feature as
(x - c)^2, the same arithmetic as the scalar kernels, not the cancellation-prone dot-product form.

Numba's on-disk cache keys the kernels of engine/kernels.py on that file alone: after editing
this one, touch engine/kernels.py (or delete engine/__pycache__) so that they are rebuilt.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

LANES = 8  # centres per vector
ROWS = 4  # rows per call


@njit(cache=True)
def centre_blocks(C):
    """Centres as (ceil(k / LANES), d, LANES) blocks; missing lanes at +inf, never nearest."""
    k, d = C.shape
    blocks = np.full(((k + LANES - 1) // LANES, d, LANES), np.inf, C.dtype)
    for j in range(k):
        for t in range(d):
            blocks[j // LANES, t, j % LANES] = C[j, t]
    return blocks


def arrays_of(dtype: types.Type, *pairs: tuple[types.Type, int]) -> bool:
    """Are these (type, ndim) pairs all arrays of `dtype` (C order from two dimensions down to
    vectors; a 2-D array of rows may have any layout)? The intrinsics' argument check."""
    return all(
        isinstance(t, types.Array)
        and t.ndim == ndim
        and t.dtype == dtype
        and (t.layout == "C" or (ndim == 2 and i == 0))
        for i, (t, ndim) in enumerate(pairs)
    )


def splat(builder: ir.IRBuilder, vtype: ir.VectorType, scalar: ir.Value) -> ir.Value:
    """`scalar` in every lane of a vector of type `vtype`."""
    lane0 = builder.insert_element(ir.Constant(vtype, ir.Undefined), scalar, ir.IntType(32)(0))
    zeros = ir.Constant(ir.VectorType(ir.IntType(32), vtype.count), [0] * vtype.count)
    return builder.shuffle_vector(lane0, ir.Constant(vtype, ir.Undefined), zeros)


def rotate(builder: ir.IRBuilder, vec: ir.Value, shift: int) -> ir.Value:
    """`vec`'s lanes moved down by `shift`, wrapping around."""
    lanes = vec.type.count
    mask = [(i + shift) % lanes for i in range(lanes)]
    return builder.shuffle_vector(
        vec,
        ir.Constant(vec.type, ir.Undefined),
        ir.Constant(ir.VectorType(ir.IntType(32), lanes), mask),
    )


def _accumulate(context, builder, x_t, xa, first, ca, per_block):
    """The shared loop: for each block of LANES centres, the squared distances of ROWS rows
    summed feature by feature into one vector per row; `per_block(b, sums)` receives them."""
    intp = context.get_value_type(types.intp)
    ftype = context.get_value_type(x_t.dtype)
    fvec = ir.VectorType(ftype, LANES)
    align = context.get_abi_alignment(ftype)
    d = cgutils.unpack_tuple(builder, xa.shape, 2)[1]
    row_stride, col_stride = cgutils.unpack_tuple(builder, xa.strides, 2)
    n_blocks = cgutils.unpack_tuple(builder, ca.shape, 3)[0]
    x_bytes = builder.bitcast(xa.data, ir.IntType(8).as_pointer())
    rows = [
        builder.gep(x_bytes, [builder.mul(builder.add(first, intp(r)), row_stride)])
        for r in range(ROWS)
    ]
    acc = [cgutils.alloca_once(builder, fvec) for _ in range(ROWS)]
    zero = ir.Constant(fvec, [ir.Constant(ftype, 0.0)] * LANES)
    with cgutils.for_range(builder, n_blocks) as block_loop:
        b = block_loop.index
        for r in range(ROWS):
            builder.store(zero, acc[r])
        block = builder.gep(ca.data, [builder.mul(b, builder.mul(d, intp(LANES)))])
        with cgutils.for_range(builder, d) as feature_loop:
            t = feature_loop.index
            cptr = builder.gep(block, [builder.mul(t, intp(LANES))])
            centres = builder.load(builder.bitcast(cptr, fvec.as_pointer()), align=align)
            offset = builder.mul(t, col_stride)
            for r in range(ROWS):
                xptr = builder.bitcast(builder.gep(rows[r], [offset]), ftype.as_pointer())
                diff = builder.fsub(splat(builder, fvec, builder.load(xptr)), centres)
                sq = builder.fmul(diff, diff, flags=("contract",))
                builder.store(builder.fadd(builder.load(acc[r]), sq, flags=("contract",)), acc[r])
        per_block(b, [builder.load(a) for a in acc])


@intrinsic
def distance_rows(typingctx, X, i0, blocks, out):
    """For rows i0 .. i0 + ROWS - 1 of X: the squared distance to every centre of `blocks`
    into out[r, j] (out: ROWS x LANES * blocks, C order, X's dtype), the same arithmetic as
    `nearest_rows`."""
    if not (isinstance(X, types.Array) and arrays_of(X.dtype, (X, 2), (blocks, 3), (out, 2))):
        return None
    sig = types.void(X, i0, blocks, out)

    def codegen(context, builder, signature, args):
        x_t, i_t, c_t, o_t = signature.args
        xa = context.make_array(x_t)(context, builder, args[0])
        ca = context.make_array(c_t)(context, builder, args[2])
        oa = context.make_array(o_t)(context, builder, args[3])
        intp = context.get_value_type(types.intp)
        fvec = ir.VectorType(context.get_value_type(x_t.dtype), LANES)
        width = cgutils.unpack_tuple(builder, oa.shape, 2)[1]
        first = context.cast(builder, args[1], i_t, types.intp)

        def store(b, sums):
            for r, vec in enumerate(sums):
                at = builder.add(builder.mul(intp(r), width), builder.mul(b, intp(LANES)))
                ptr = builder.bitcast(builder.gep(oa.data, [at]), fvec.as_pointer())
                builder.store(vec, ptr, align=context.get_abi_alignment(fvec.element))

        _accumulate(context, builder, x_t, xa, first, ca, store)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def nearest_rows(typingctx, X, i0, blocks, out_dist, out_label):
    """For rows i0 .. i0 + ROWS - 1 of X (any layout): the nearest centre's index into
    out_label (int32) and its squared distance into out_dist; ties go to the lower index, rows
    with NaN get centre 0 at +inf. `blocks` comes from `centre_blocks`, in X's dtype."""
    if not (
        isinstance(X, types.Array)
        and arrays_of(X.dtype, (X, 2), (blocks, 3), (out_dist, 1))
        and arrays_of(types.int32, (out_label, 1))
    ):
        return None
    sig = types.void(X, i0, blocks, out_dist, out_label)

    def codegen(context, builder, signature, args):
        x_t, i_t, c_t, d_t, j_t = signature.args
        xa = context.make_array(x_t)(context, builder, args[0])
        ca = context.make_array(c_t)(context, builder, args[2])
        da = context.make_array(d_t)(context, builder, args[3])
        ja = context.make_array(j_t)(context, builder, args[4])
        intp = context.get_value_type(types.intp)
        i32 = ir.IntType(32)
        ftype = context.get_value_type(x_t.dtype)
        fvec = ir.VectorType(ftype, LANES)
        ivec = ir.VectorType(i32, LANES)
        first = context.cast(builder, args[1], i_t, types.intp)
        inf = ir.Constant(fvec, [ir.Constant(ftype, float("inf"))] * LANES)
        best = [cgutils.alloca_once_value(builder, inf) for _ in range(ROWS)]
        best_block = [cgutils.alloca_once_value(builder, ivec([0] * LANES)) for _ in range(ROWS)]

        def keep_nearest(b, sums):
            block_ids = splat(builder, ivec, builder.trunc(b, i32))
            for r, dist in enumerate(sums):
                kept = builder.load(best[r])
                closer = builder.fcmp_ordered("<", dist, kept)  # false for NaN
                builder.store(builder.select(closer, dist, kept), best[r])
                builder.store(
                    builder.select(closer, block_ids, builder.load(best_block[r])), best_block[r]
                )

        _accumulate(context, builder, x_t, xa, first, ca, keep_nearest)

        lane_ids = ivec(list(range(LANES)))
        no_index = ivec([2**31 - 1] * LANES)
        for r in range(ROWS):
            lanes = builder.load(best[r])
            low = lanes
            for shift in (4, 2, 1):
                other = rotate(builder, low, shift)
                low = builder.select(builder.fcmp_ordered("<", other, low), other, low)
            index = builder.add(
                builder.mul(builder.load(best_block[r]), ivec([LANES] * LANES)), lane_ids
            )
            index = builder.select(builder.fcmp_ordered("==", lanes, low), index, no_index)
            for shift in (4, 2, 1):
                other = rotate(builder, index, shift)
                index = builder.select(builder.icmp_signed("<", other, index), other, index)
            builder.store(builder.extract_element(low, i32(0)), builder.gep(da.data, [intp(r)]))
            builder.store(builder.extract_element(index, i32(0)), builder.gep(ja.data, [intp(r)]))
        return context.get_dummy_value()

    return sig, codegen
