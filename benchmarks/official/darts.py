"""DARTS (quark0/darts cnn/) beside nasbench's DARTS: forward, weight and α gradients, second order."""
import copy, os, sys, types
from common import *
ROOT = os.path.join(official_root(), "cnn")

(model_search, architect) = load_official(ROOT, ["model_search", "architect"])
C, L = 8, 5
cfg, s, net, spec = ours("darts", "darts.unrolled=true", C=C, layers=L)
torch.manual_seed(1)
off = model_search.Network(C, 10, L, torch.nn.CrossEntropyLoss()).double()
copy_params(off, net)
with torch.no_grad():  # α away from uniform
    for a in off.arch_parameters():
        a.normal_(0, 0.5)
    s.arch["alpha_normal"].copy_(off.alphas_normal)
    s.arch["alpha_reduce"].copy_(off.alphas_reduce)
torch.manual_seed(2)
xt, yt = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
xv, yv = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
res = {}
for execution in ("reference", "fast"):
    net.set_execution(execution)
    n2, o2 = copy.deepcopy(net), copy.deepcopy(off)
    lo = o2(xt); lr_ = n2(xt, s.weights())
    go = torch.autograd.grad(F.cross_entropy(lo, yt), [*o2.parameters(), *o2.arch_parameters()])
    gn = torch.autograd.grad(F.cross_entropy(lr_, yt), [*n2.parameters(), s.arch["alpha_normal"], s.arch["alpha_reduce"]])
    P = len(list(o2.parameters()))
    print(f"DARTS 1st order [{execution}]: logits {rel(lr_, lo):.1e}, weight grads {worst(gn[:P], go[:P]):.1e}, "
          f"alpha grads {worst(gn[P:], go[P:]):.1e}")
    # second order after one weight step on each (momentum buffers present)
    args = types.SimpleNamespace(momentum=0.9, weight_decay=3e-4, arch_learning_rate=3e-4, arch_weight_decay=1e-3)
    oo = torch.optim.SGD(o2.parameters(), 0.025, momentum=0.9, weight_decay=3e-4)
    on = torch.optim.SGD(n2.parameters(), 0.025, momentum=0.9, weight_decay=3e-4)
    F.cross_entropy(o2(xt), yt).backward(); oo.step(); oo.zero_grad()
    F.cross_entropy(n2(xt, s.weights()), yt).backward(); on.step(); on.zero_grad()
    for a in o2.arch_parameters(): a.grad = None
    for a in s.arch.values(): a.grad = None
    ar = architect.Architect(o2, args)
    ar._backward_step_unrolled(xt, yt, xv, yv, 0.025, oo)
    s.arch_backward(ArchStepContext(n2, (xt, yt), (xv, yv), on, 0.025, F.cross_entropy))
    print(f"DARTS 2nd order [{execution}]: alpha grads {worst([s.arch['alpha_normal'].grad, s.arch['alpha_reduce'].grad], [a.grad for a in o2.arch_parameters()]):.1e}")
    for a in s.arch.values(): a.grad = None
