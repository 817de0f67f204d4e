"""eager_under_compile: the function as it is outside compiling, one graph break inside, and no dynamo import for it."""

from __future__ import annotations

import subprocess
import sys

import torch

from compose_gen import eager_under_compile


@eager_under_compile
def _passes(x: torch.Tensor, times: int) -> torch.Tensor:
    for _ in range(times):
        x = torch.tanh(x) * 1.5
    return x


def test_outside_compiling_it_is_the_function_itself() -> None:
    x = torch.randn(4, requires_grad=True)
    y = _passes(x, 3)
    reference = torch.tanh(torch.tanh(torch.tanh(x) * 1.5) * 1.5) * 1.5
    assert torch.equal(y, reference)
    (grad,), (expected,) = (torch.autograd.grad(v.sum(), x) for v in (y, reference))
    assert torch.equal(grad, expected)


def test_a_compiled_caller_leaves_its_loop_out_of_the_graph() -> None:
    from torch._dynamo.testing import CompileCounter

    def traced_ops(times: int) -> int:
        torch._dynamo.reset()
        counter = CompileCounter()
        out = torch.compile(lambda x: _passes(x + 1, times).sum(), backend=counter)(torch.zeros(3))
        assert out == _passes(torch.ones(3), times).sum()
        return counter.op_count

    assert traced_ops(2) == traced_ops(20)  # the loop's 40 ops would be traced, unrolled, without the wrapper


def test_calling_it_eagerly_does_not_import_the_compiler() -> None:
    """torch._dynamo takes seconds to import: the first MAF sample or IAF density paid for it."""
    probe = (
        "import sys, torch; from compose_gen import eager_under_compile; "
        "f = eager_under_compile(lambda x: x + 1); f(torch.zeros(1)); "
        "print([m for m in sys.modules if m.startswith('torch._dynamo')])"
    )
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "[]"
