"""PC-DARTS (yuhuixu1993/PC-DARTS) beside nasbench's PC-DARTS: forward, weight/α/β gradients, second order, derive."""
import copy, os, types
from common import *
ROOT = official_root()

(model_search, architect) = load_official(ROOT, ["model_search", "architect"])
C, L = 8, 5
cfg, s, net, spec = ours("pc-darts", "pc_darts.unrolled=true", C=C, layers=L)
torch.manual_seed(1)
off = model_search.Network(C, 10, L, torch.nn.CrossEntropyLoss()).double()
copy_params(off, net)
with torch.no_grad():
    for a in off.arch_parameters():
        a.normal_(0, 0.5)
    for k, a in zip(["alpha_normal", "alpha_reduce", "beta_normal", "beta_reduce"], off.arch_parameters()):
        s.arch[k].copy_(a)
keys = ["alpha_normal", "alpha_reduce", "beta_normal", "beta_reduce"]
torch.manual_seed(2)
xt, yt = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
xv, yv = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
for execution in ("reference", "fast"):
    net.set_execution(execution)
    n2, o2 = copy.deepcopy(net), copy.deepcopy(off)
    lo = o2(xt); ln = n2(xt, s.weights())
    go = torch.autograd.grad(F.cross_entropy(lo, yt), [*o2.parameters(), *o2.arch_parameters()])
    gn = torch.autograd.grad(F.cross_entropy(ln, yt), [*n2.parameters(), *[s.arch[k] for k in keys]])
    P = len(list(o2.parameters()))
    print(f"PC-DARTS 1st order [{execution}]: logits {rel(ln, lo):.1e}, weight grads {worst(gn[:P], go[:P]):.1e}, "
          f"alpha+beta grads {worst(gn[P:], go[P:]):.1e}")
    args = types.SimpleNamespace(momentum=0.9, weight_decay=3e-4, arch_learning_rate=6e-4, arch_weight_decay=1e-3)
    oo = torch.optim.SGD(o2.parameters(), 0.1, momentum=0.9, weight_decay=3e-4)
    on = torch.optim.SGD(n2.parameters(), 0.1, momentum=0.9, weight_decay=3e-4)
    F.cross_entropy(o2(xt), yt).backward(); oo.step(); oo.zero_grad()
    F.cross_entropy(n2(xt, s.weights()), yt).backward(); on.step(); on.zero_grad()
    for a in [*o2.arch_parameters(), *s.arch.values()]: a.grad = None
    architect.Architect(o2, args)._backward_step_unrolled(xt, yt, xv, yv, 0.1, oo)
    s.arch_backward(ArchStepContext(n2, (xt, yt), (xv, yv), on, 0.1, F.cross_entropy))
    print(f"PC-DARTS 2nd order [{execution}]: alpha+beta grads "
          f"{worst([s.arch[k].grad for k in keys], [a.grad for a in o2.arch_parameters()]):.1e}")
    for a in s.arch.values(): a.grad = None
g_off = off.genotype()
g_ours = s.derive()
print("official genotype:", g_off)
print("ours:             ", g_ours)
