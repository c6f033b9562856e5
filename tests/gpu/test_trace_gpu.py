"""Launch traces of the eager CUDA SKLinear (needs a GPU): calls replayed from a recorded
one give the ordinary path's results, and really are replays."""
import pytest

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch")
cupy = pytest.importorskip("cupy")
pr = pytest.importorskip("sketchcore_torch")

from sketchcore._cuda import _trace  # noqa: E402
from sketchcore_torch import _ops  # noqa: E402

TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-12, atol=1e-12),
       torch.float16: dict(rtol=2e-3, atol=2e-3), torch.bfloat16: dict(rtol=1e-2, atol=1e-2)}


@pytest.fixture
def fresh_traces(monkeypatch):
    """Empty trace caches, and a count of replays."""
    monkeypatch.setattr(_ops, "_fwd_traces", {})
    monkeypatch.setattr(_ops, "_bwd_traces", {})
    monkeypatch.setattr(_ops, "_bwd_recorded", {})
    replays = []
    original = _trace.Trace.replay

    def counted(self, *args):
        replays.append(self)
        return original(self, *args)

    monkeypatch.setattr(_trace.Trace, "replay", counted)
    return replays


def _steps(layer, dtype, need_x, steps=3):
    out = []
    for step in range(steps):
        gen = torch.Generator(device="cuda").manual_seed(step)
        x = torch.randn(50, 72, device="cuda", dtype=dtype, generator=gen,
                        requires_grad=need_x)
        g = torch.randn(50, 40, device="cuda", dtype=dtype, generator=gen)
        layer.zero_grad(set_to_none=True)
        y = layer(x)
        y.backward(g)
        out.append([y.detach().clone()] + ([x.grad.clone()] if need_x else [])
                   + [p.grad.clone() for p in layer.parameters()])
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16,
                                   torch.bfloat16])
@pytest.mark.parametrize("bias,L,need_x", [(True, 1, True), (False, 2, True), (True, 2, False)])
def test_replays_match_the_ordinary_path(monkeypatch, fresh_traces, dtype, bias, L, need_x):
    torch.manual_seed(0)
    layer = pr.nn.SKLinear(72, 40, L, 8, bias=bias, device="cuda", dtype=dtype)
    monkeypatch.setattr(_ops, "_TRACE", False)
    plain = _steps(layer, dtype, need_x)
    assert not fresh_traces and not _ops._fwd_traces
    monkeypatch.setattr(_ops, "_TRACE", True)
    traced = _steps(layer, dtype, need_x)
    # Step 0 records forward and backward; steps 1 and 2 replay both.
    assert len(fresh_traces) == 4
    assert all(t is not None for t in _ops._fwd_traces.values())
    assert all(t is not None for t in _ops._bwd_traces.values())
    if dtype in (torch.float16, torch.bfloat16):    # cuBLAS products: planned with cuBLASLt
        from sketchcore._cuda._tensorcore import _lt_ctypes
        if _lt_ctypes() is not None:
            assert all(t._plans for t in _ops._fwd_traces.values())
    for a_step, b_step in zip(plain, traced):
        for a, b in zip(a_step, b_step):
            torch.testing.assert_close(b, a, **TOL[dtype])


def test_inference_replays_and_training_records_its_backward(fresh_traces):
    torch.manual_seed(1)
    layer = pr.nn.SKLinear(72, 40, 1, 8, device="cuda")
    x = torch.randn(50, 72, device="cuda")
    with torch.no_grad():
        first, second = layer(x), layer(x)
    assert len(fresh_traces) == 1                 # the second call replayed
    torch.testing.assert_close(second, first, rtol=1e-6, atol=1e-6)
    # Training: the forward records again until a backward of its key has been recorded.
    xg = x.clone().requires_grad_()
    layer(xg).sum().backward()                    # expanded grad_y: made contiguous
    assert len(fresh_traces) == 1 and len(_ops._bwd_traces) == 1
    layer.zero_grad(set_to_none=True)
    xg.grad = None
    y = layer(xg)
    y.sum().backward()
    assert len(fresh_traces) == 3
    ref = x @ layer.effective_weight().detach() + layer.bias.detach()
    torch.testing.assert_close(y.detach(), ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(xg.grad, layer.effective_weight().detach().sum(1).expand_as(x),
                               rtol=1e-4, atol=1e-4)


def test_replay_on_a_side_stream_is_ordered(fresh_traces):
    """A replay launches on torch's current stream, like the ordinary path."""
    torch.manual_seed(2)
    layer = pr.nn.SKLinear(72, 40, 1, 8, device="cuda")
    x = torch.randn(4096, 72, device="cuda")
    with torch.no_grad():
        ref = layer(x).clone()
        s = torch.cuda.Stream()
        with torch.cuda.stream(s):
            xs = torch.empty_like(x)
            for _ in range(3):
                xs.copy_(x)
                xs.mul_(1.0)
            zs = layer(xs) * 2
        s.synchronize()
    assert len(fresh_traces) == 1
    torch.testing.assert_close(zs, 2 * ref, rtol=1e-5, atol=1e-5)


def test_a_failed_recording_keeps_the_ordinary_path(monkeypatch, fresh_traces):
    """An address the recorder cannot place makes the recording fail: no trace, and every
    later call takes the ordinary path with correct results."""
    def nowhere(self, ptr):
        raise _trace._Fail(f"address {ptr:#x} is in no region of the recorded call")

    monkeypatch.setattr(_trace._Recorder, "where", nowhere)
    torch.manual_seed(4)
    layer = pr.nn.SKLinear(72, 40, 1, 8, device="cuda")
    x = torch.randn(50, 72, device="cuda")
    with torch.no_grad():
        ys = [layer(x) for _ in range(3)]
    assert list(_ops._fwd_traces.values()) == [None] and not fresh_traces
    ref = x @ layer.effective_weight() + layer.bias
    for y in ys:
        torch.testing.assert_close(y, ref.detach(), rtol=1e-4, atol=1e-4)


def test_trace_cache_starts_over_when_full(monkeypatch, fresh_traces):
    monkeypatch.setattr(_ops, "_TRACE_CACHE_SIZE", 2)
    layer = pr.nn.SKLinear(72, 40, 1, 8, device="cuda")
    with torch.no_grad():
        for n in (3, 4, 5):                       # three batch sizes, three configurations
            layer(torch.randn(n, 72, device="cuda"))
    assert len(_ops._fwd_traces) == 1             # cleared at the third


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_recurring_addresses_launch_captured_graphs(monkeypatch, fresh_traces, dtype):
    """A training loop gets the same blocks from torch's allocator step after step: its
    replays become CUDA graph launches, with the ordinary path's results, also on a side
    stream (the graph launches on the current stream). Each step is checked as it ends and
    keeps nothing, so that every step allocates alike."""
    torch.manual_seed(5)
    layer = pr.nn.SKLinear(72, 40, 1, 8, device="cuda", dtype=dtype)
    x = torch.randn(64, 72, device="cuda", dtype=dtype, requires_grad=True)
    g = torch.randn(64, 40, device="cuda", dtype=dtype)

    def step(ref=None):
        layer.zero_grad(set_to_none=True)
        x.grad = None
        y = layer(x)
        y.backward(g)
        out = [y.detach(), x.grad] + [p.grad for p in layer.parameters()]
        if ref is None:
            return [t.clone() for t in out]
        for a, b in zip(ref, out):
            torch.testing.assert_close(b, a, **TOL[dtype])

    monkeypatch.setattr(_ops, "_TRACE", False)
    ref = step()
    monkeypatch.setattr(_ops, "_TRACE", True)
    for _ in range(12):
        step(ref)
    traces = list(_ops._fwd_traces.values()) + list(_ops._bwd_traces.values())
    assert all(t.graph_launches > 0 for t in traces), [t.graph_launches for t in traces]
    # Inference on a side stream whose input is written on that stream just before.
    xd = x.detach()
    monkeypatch.setattr(_ops, "_TRACE", False)
    with torch.no_grad():
        expected = [layer(xd * (i + 1)) for i in range(8)]
    monkeypatch.setattr(_ops, "_TRACE", True)
    before = sum(t.graph_launches for t in _ops._fwd_traces.values())
    s = torch.cuda.Stream()
    with torch.no_grad(), torch.cuda.stream(s):
        xs = torch.empty_like(xd)
        for i in range(8):
            torch.mul(xd, i + 1, out=xs)
            torch.testing.assert_close(layer(xs), expected[i], **TOL[dtype])
    s.synchronize()
    assert sum(t.graph_launches for t in _ops._fwd_traces.values()) > before


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_training_forward_allocates_the_backward_workspace(monkeypatch, fresh_traces, dtype):
    """A replayed training forward puts hidden, its workspace and the backward's in one
    block, and the backward replays into it; a reservation smaller than the backward
    needs makes the backward allocate its own. Results match the ordinary path."""
    seen = []
    counted = _trace.Trace.replay

    def spy(self, slots, workspace, stream):
        seen.append((self, list(slots), workspace))
        return counted(self, slots, workspace, stream)

    monkeypatch.setattr(_trace.Trace, "replay", spy)
    torch.manual_seed(6)
    layer = pr.nn.SKLinear(72, 40, 1, 8, device="cuda", dtype=dtype)
    x = torch.randn(64, 72, device="cuda", dtype=dtype, requires_grad=True)
    g = torch.randn(64, 40, device="cuda", dtype=dtype)

    def step():
        layer.zero_grad(set_to_none=True)
        x.grad = None
        y = layer(x)
        y.backward(g)
        return [y.detach().clone(), x.grad.clone()] + [p.grad.clone() for p in layer.parameters()]

    monkeypatch.setattr(_ops, "_TRACE", False)
    ref = step()
    monkeypatch.setattr(_ops, "_TRACE", True)
    for _ in range(2):
        step()                                    # records, then replays
    fwd_trace, bwd_trace = (list(c.values())[0] for c in (_ops._fwd_traces, _ops._bwd_traces))
    assert bwd_trace.workspace_bytes > 0
    assert _ops._bwd_recorded[next(iter(_ops._fwd_traces))] >= bwd_trace.workspace_bytes
    seen.clear()
    for got, want in zip(step(), ref):
        torch.testing.assert_close(got, want, **TOL[dtype])
    (f, f_slots, f_ws), (b, _, b_ws) = seen
    assert f is fwd_trace and b is bwd_trace
    hidden_address = f_slots[7]
    assert f_ws == hidden_address + _ops._aligned(64 * 16 * 4)
    assert b_ws == f_ws + _ops._aligned(fwd_trace.workspace_bytes)
    # Too small a reservation: the backward allocates, elsewhere, and still agrees.
    for key in _ops._bwd_recorded:
        _ops._bwd_recorded[key] = 0
    seen.clear()
    for got, want in zip(step(), ref):
        torch.testing.assert_close(got, want, **TOL[dtype])
    (_, f_slots, f_ws), (_, _, b_ws) = seen
    assert not f_slots[7] <= b_ws < f_ws + _ops._aligned(fwd_trace.workspace_bytes)
