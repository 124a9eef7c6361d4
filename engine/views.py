"""Views without a reference count, for arrays handed to small helpers in a hot loop.

Every time a Numba function passes an array to another (or binds it to a new name), it takes a
reference to the array's memory and drops it afterwards: two atomic operations on a counter that
other threads may share. For a helper that reads a few bytes - one JSON number, one key - that is
most of its cost: calling a one-digit scan with the array took 22 ns, the same call with a
borrowed view 1 ns (stream/jsonscan.py measures). `borrowed` makes that view: the same data,
shape and strides, and no owner, so Numba's reference counting skips it.

The caller must keep the owner alive while the view is in use; a kernel's own arguments are
(the Python caller holds them for the call). Never borrow an array the kernel allocates itself:
Numba frees it after its last use by name, whatever views of it remain.

A helper that is too large to inline (a JSON value's validation) still pays for the references
its own body takes. `NO_REFCOUNTS` compiles such a function without reference counting at all
(Numba's `_nrt=False`): it may then take and index arrays but never allocate one. With it, skipping
a JSON number inside an array cost 10 ns instead of 47 ns.
"""

from __future__ import annotations

from typing import Any

from numba import types
from numba.extending import intrinsic

__all__ = ["NO_REFCOUNTS", "borrowed"]

# njit options for a function that takes arrays but never allocates one (see the module).
NO_REFCOUNTS: dict[str, Any] = {"_nrt": False}


@intrinsic
def borrowed(typingctx, arr):
    """A view of the array `arr` (an argument of the calling kernel) that holds no reference;
    None stays None (an optional array)."""
    if isinstance(arr, types.NoneType):
        return arr(arr), lambda context, builder, sig, args: args[0]
    if not isinstance(arr, types.Array):
        return None

    def codegen(context, builder, sig, args):
        src = context.make_array(arr)(context, builder, args[0])
        view = context.make_array(arr)(context, builder)
        context.populate_array(
            view,
            data=src.data,
            shape=src.shape,
            strides=src.strides,
            itemsize=src.itemsize,
            meminfo=None,
        )
        return view._getvalue()

    return arr(arr), codegen
