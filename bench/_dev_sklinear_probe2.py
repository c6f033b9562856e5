# temporary dev probe (deleted before the report)
import time, torch, numpy as np
from sketchcore import _cpu
from sketchcore._cpu import _linear
torch.set_num_threads(2)
def tm(f, r=21):
    for _ in range(3): f()
    ts=[]
    for _ in range(r):
        t=time.perf_counter(); f(); ts.append(time.perf_counter()-t)
    return round(sorted(ts)[r//2]*1e3, 3)
rng=np.random.default_rng(0)
for (n,b,L,k) in [(1024,256,2,32),(1024,512,4,64),(8192,512,1,16)]:
    f=np.float32
    x=rng.standard_normal((b,n),dtype=f); S1=rng.standard_normal((L,n,k),dtype=f); S2=rng.standard_normal((L,k,n),dtype=f); U1=S2.copy(); U2=S1.copy(); bias=np.zeros(n,f)
    y,h=_cpu.sketched_linear_forward(x,S1,S2,U1,U2,bias)
    g=rng.standard_normal((b,n),dtype=f)
    r = {}
    for thr in (1<<20, 1<<62):
        _linear._set_parallel_min_flops(thr)
        tag = 'omp' if thr == 1<<20 else 'ser'
        r[tag+'fwd'] = tm(lambda: _cpu.sketched_linear_forward(x,S1,S2,U1,U2,bias))
        r[tag+'bwd'] = tm(lambda: _cpu.sketched_linear_backward(g,x,h,S1,S2,U1,U2,True))
        r[tag+'bwd_nox'] = tm(lambda: _cpu.sketched_linear_backward(g,x,h,S1,S2,U1,U2,True,False,True))
        r[tag+'bwd_now'] = tm(lambda: _cpu.sketched_linear_backward(g,x,h,S1,S2,U1,U2,True,True,False))
    _linear._set_parallel_min_flops(1<<20)
    xt=torch.from_numpy(x); A=torch.randn(n, 2*L*k); G=torch.randn(b, 2*L*k)
    r['torch xA'] = tm(lambda: xt@A); r['torch GAt'] = tm(lambda: G@A.T); r['torch xtG'] = tm(lambda: xt.T@G)
    xa = x; An = A.numpy(); Gn=G.numpy()
    print(n,b,L,k, r, flush=True)
