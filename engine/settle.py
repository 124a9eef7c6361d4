"""Explicit vector code for the exact distances that settle the product form's answers.

engine/wide.py nominates each row's centre by the dot-product form, then needs the exact
kernel's squared distance to it: (x - c)^2 summed feature by feature, in order, in fused
multiply-adds. That sum is one dependent chain per row, so a scalar loop over eight rows (eight
chains) spends two loads, a subtraction and a multiply-add on every feature of every row, as
much time as the product form itself at d = 384. `settle_sums` keeps the order but puts the
eight rows side by side: it subtracts eight features of each row from its centre's as vectors,
transposes those 8 x 8 differences in registers (24 shuffles), and adds each feature's squares
to all eight chains at once. Each lane does exactly the scalar chain's operations, so the sums
are the exact kernel's bits (tests/engine compare them). Alongside it sums ||x||^2 per row (in
any order: it only feeds the rounding bound).

Numba's on-disk cache keys the kernels of engine/kernels.py on that file alone: after editing
this one, touch engine/kernels.py (or delete engine/__pycache__) so that they are rebuilt.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .simd import arrays_of

ROWS = 8  # rows per call, one per lane; the transpose below is 8 x 8


def _transpose(builder: ir.IRBuilder, rows: list[ir.Value]) -> list[ir.Value]:
    """The 8 x 8 matrix whose rows are the vectors `rows`, transposed: three rounds of swapping
    the off-diagonal s x s blocks (s = 4, 2, 1), two shuffles per pair of vectors each."""
    n = len(rows)
    i32 = ir.IntType(32)
    rows = list(rows)
    s = n // 2
    while s:
        low = [j if j & s == 0 else n + j - s for j in range(n)]
        high = [j + s if j & s == 0 else n + j for j in range(n)]
        for i in range(n):
            if i & s == 0:
                a, b = rows[i], rows[i + s]
                rows[i] = builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(i32, n), low))
                rows[i + s] = builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(i32, n), high))
        s //= 2
    return rows


def _load_run(builder, row, t, stride, contiguous, ftype, vtype, align):
    """Features t .. t + ROWS - 1 of the row starting at byte pointer `row`."""
    if contiguous:
        first = builder.gep(builder.bitcast(row, ftype.as_pointer()), [t])
        return builder.load(builder.bitcast(first, vtype.as_pointer()), align=align)
    vec = ir.Constant(vtype, ir.Undefined)
    for q in range(ROWS):
        offset = builder.mul(builder.add(t, t.type(q)), stride)
        ptr = builder.bitcast(builder.gep(row, [offset]), ftype.as_pointer())
        vec = builder.insert_element(vec, builder.load(ptr), ir.IntType(32)(q))
    return vec


@intrinsic
def settle_sums(typingctx, X, i0, C, label, out_dist, out_sq):
    """For rows i0 .. i0 + ROWS - 1 of X (any layout): the exact kernel's squared distance to
    centre label[r] of C into out_dist[r] (X's dtype), and ||x||^2 into out_sq[r] (float64)."""
    if not (
        isinstance(X, types.Array)
        and arrays_of(X.dtype, (X, 2), (C, 2), (out_dist, 1))
        and arrays_of(types.int32, (label, 1))
        and arrays_of(types.float64, (out_sq, 1))
    ):
        return None
    sig = types.void(X, i0, C, label, out_dist, out_sq)
    contiguous = X.layout == "C"

    def codegen(context, builder, signature, args):
        x_t, i_t, c_t, l_t, o_t, q_t = signature.args
        xa = context.make_array(x_t)(context, builder, args[0])
        ca = context.make_array(c_t)(context, builder, args[2])
        la, oa, qa = (
            context.make_array(t)(context, builder, a)
            for t, a in zip((l_t, o_t, q_t), args[3:], strict=True)
        )
        intp = context.get_value_type(types.intp)
        f64 = ir.DoubleType()
        ftype = context.get_value_type(x_t.dtype)
        vtype = ir.VectorType(ftype, ROWS)
        align = context.get_abi_alignment(ftype)
        contract = ("contract",)

        def widen(value: ir.Value) -> ir.Value:
            return value if ftype == f64 else builder.fpext(value, f64)

        first = context.cast(builder, args[1], i_t, types.intp)
        d = cgutils.unpack_tuple(builder, xa.shape, 2)[1]
        x_row_stride, x_col_stride = cgutils.unpack_tuple(builder, xa.strides, 2)
        c_row_stride = cgutils.unpack_tuple(builder, ca.strides, 2)[0]
        x_bytes = builder.bitcast(xa.data, ir.IntType(8).as_pointer())
        c_bytes = builder.bitcast(ca.data, ir.IntType(8).as_pointer())
        x_rows, c_rows = [], []
        for r in range(ROWS):
            x_rows.append(
                builder.gep(x_bytes, [builder.mul(builder.add(first, intp(r)), x_row_stride)])
            )
            j = builder.sext(builder.load(builder.gep(la.data, [intp(r)])), intp)
            c_rows.append(builder.gep(c_bytes, [builder.mul(j, c_row_stride)]))
        zero = ir.Constant(vtype, [ir.Constant(ftype, 0.0)] * ROWS)
        sums = cgutils.alloca_once_value(builder, zero)  # lane r: row r's chain
        squares = [cgutils.alloca_once_value(builder, zero) for _ in range(ROWS)]

        with cgutils.for_range(builder, builder.udiv(d, intp(ROWS))) as tiles:
            t = builder.mul(tiles.index, intp(ROWS))
            diffs = []
            for r in range(ROWS):
                x = _load_run(builder, x_rows[r], t, x_col_stride, contiguous, ftype, vtype, align)
                c = _load_run(builder, c_rows[r], t, None, True, ftype, vtype, align)
                diffs.append(builder.fsub(x, c))
                sq = builder.fadd(builder.load(squares[r]), builder.fmul(x, x, flags=contract))
                builder.store(sq, squares[r])
            total = builder.load(sums)
            for e in _transpose(builder, diffs):  # feature by feature, in order
                total = builder.fadd(total, builder.fmul(e, e, flags=contract), flags=contract)
            builder.store(total, sums)

        # The features past the last whole tile, row by row, continuing each chain.
        chains = [
            cgutils.alloca_once_value(
                builder, builder.extract_element(builder.load(sums), ir.IntType(32)(r))
            )
            for r in range(ROWS)
        ]
        tails = [cgutils.alloca_once_value(builder, ir.Constant(ftype, 0.0)) for _ in range(ROWS)]
        done = builder.mul(builder.udiv(d, intp(ROWS)), intp(ROWS))
        with cgutils.for_range(builder, builder.sub(d, done)) as rest:
            t = builder.add(done, rest.index)
            for r in range(ROWS):
                xp = builder.gep(x_rows[r], [builder.mul(t, x_col_stride)])
                x = builder.load(builder.bitcast(xp, ftype.as_pointer()))
                cp = builder.gep(builder.bitcast(c_rows[r], ftype.as_pointer()), [t])
                e = builder.fsub(x, builder.load(cp))
                sq = builder.fmul(e, e, flags=contract)
                s = builder.fadd(builder.load(chains[r]), sq, flags=contract)
                builder.store(s, chains[r])
                builder.store(builder.fadd(builder.load(tails[r]), builder.fmul(x, x)), tails[r])
        for r in range(ROWS):
            builder.store(builder.load(chains[r]), builder.gep(oa.data, [intp(r)]))
            vec = builder.load(squares[r])
            total = widen(builder.load(tails[r]))
            for q in range(ROWS):
                total = builder.fadd(total, widen(builder.extract_element(vec, ir.IntType(32)(q))))
            builder.store(total, builder.gep(qa.data, [intp(r)]))
        return context.get_dummy_value()

    return sig, codegen
