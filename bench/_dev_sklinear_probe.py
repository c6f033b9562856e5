# temporary dev probe (deleted before the report)
import time, sys, torch
import sketchcore_torch as pr
from sketchcore._cpu import _linear
from torch import nn
torch.set_num_threads(2)
torch.manual_seed(0)
def tm(fs, r=9):
    for f in fs.values(): f(); f()
    ts={k: [] for k in fs}
    for _ in range(r):
        for k_, f in fs.items():
            t=time.perf_counter(); f(); ts[k_].append(time.perf_counter()-t)
    return {k_: sorted(v)[len(v)//2] for k_, v in ts.items()}
cfgs = [(64,32,1,8),(1024,256,2,32),(1024,64,1,16),(1024,512,4,64),(4096,64,1,16),(4096,512,2,32),(4096,64,4,64),(8192,512,1,16),(8192,64,4,64)]
for (n,b,L,k) in cfgs:
    sk = pr.nn.SKLinear(n, n, L, k, seed=0); lin = nn.Linear(n, n)
    x = torch.randn(b, n, requires_grad=True)
    g = torch.ones(b, n)
    S1, S2, U1, U2, bias = sk.S1s, sk.S2s, sk.U1s, sk.U2s, sk.bias
    def loop():
        y = 0
        for i in range(L):
            y = y + (x @ S1[i]) @ U1[i] + (x @ U2[i]) @ S2[i]
        return y / (2*L) + bias
    def skomp():
        _linear._set_parallel_min_flops(1<<20); sk(x).backward(g)
    def skser():
        _linear._set_parallel_min_flops(1<<62); sk(x).backward(g); _linear._set_parallel_min_flops(1<<20)
    def fwd(f):
        def h():
            with torch.no_grad(): f()
        return h
    r = tm(dict(omp=skomp, serial=skser, lin=lambda: lin(x).backward(g), loop=lambda: loop().backward(g),
                f_sk=fwd(lambda: sk(x)), f_lin=fwd(lambda: lin(x)), f_loop=fwd(loop)))
    print(n,b,L,k, {kk: f"{v*1e3:.3f}" for kk,v in r.items()}, "fb vs lin %.1f vs loop %.2f | fwd vs lin %.1f vs loop %.2f" % (r['lin']/r['omp'], r['loop']/r['omp'], r['f_lin']/r['f_sk'], r['f_loop']/r['f_sk']), flush=True)
