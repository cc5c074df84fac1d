"""P-DARTS (chenxin061/pdarts) beside nasbench's P-DARTS: the network at stage 1 and at a pruned stage with skip
dropout (same masks), the pruning between stages, the final cell and every skip cap, run by the official
code's own inline block (read from train_search.py at run time and executed)."""
import copy, os, sys, textwrap, types
import numpy as np
from common import *
ROOT = official_root()

os.makedirs(SCRATCH, exist_ok=True)
os.chdir(SCRATCH)
sys.argv = ["train_search.py", "--save", SCRATCH + "/"]
(model_search, ts) = load_official(ROOT, ["model_search", "train_search"])
import logging
PRIMS = ts.PRIMITIVES
src = open(ROOT + "/train_search.py").read().splitlines()
a = next(i for i, l in enumerate(src) if "Save switches info for s-c refinement" in l)
b = next(i for i, l in enumerate(src) if l.strip().startswith("def train("))
block = textwrap.dedent("\n".join(src[a:b]))

C, L = 8, 5
# ---- the network: stage 1 (8 ops, no dropout) and stage 2 (5 ops per edge, skip dropout 0.4)
rng = np.random.RandomState(0)
switches = [[True] * 8 for _ in range(14)]
stage2 = [[True] * 8 for _ in range(14)]
for row in stage2:
    for j in rng.choice(8, 3, replace=False):
        row[j] = False
    row[3] = True  # keep skip_connect on every edge so dropout matters
    if sum(row) > 5:
        row[[j for j in range(8) if row[j] and j != 3][0]] = False
for name, sw, p in (("stage 1", switches, 0.0), ("stage 2, skip dropout 0.4", stage2, 0.4)):
    cfg, s, net, spec = ours("p-darts", f"p_darts.layers={L}", "p_darts.add_layers=[0,0,0]", f"p_darts.dropout_rate=[{p},{p},{p}]", C=C, layers=L)
    if sw is stage2:
        s.stage = 1
        s.ops = {t: [tuple(PRIMS[j] for j in range(8) if row[j]) for row in sw] for t in ("normal", "reduce")}
        s.stage = 1
        torch.manual_seed(0)
        net = s.build_supernet(s.supernet_spec(10, 3), execution="reference").double()
        s.init_arch_params(s.supernet_spec(10, 3), torch.device("cpu"))
        s.arch = {k: v.detach().double().requires_grad_() for k, v in s.arch.items()}
    torch.manual_seed(1)
    off = model_search.Network(C, 10, L, torch.nn.CrossEntropyLoss(), switches_normal=copy.deepcopy(sw),
                               switches_reduce=copy.deepcopy(sw), p=p).double()
    copy_params(off, net, skip_last=2)
    with torch.no_grad():
        for x in off.arch_parameters():
            x.normal_(0, 0.5)
        s.arch["alpha_normal"].copy_(off.alphas_normal); s.arch["alpha_reduce"].copy_(off.alphas_reduce)
    s.on_epoch_start(0, net)
    for m in net.modules():  # the same dropout rate as the official op (ours decays it per epoch)
        if isinstance(m, torch.nn.Dropout):
            m.p = p
    torch.manual_seed(2)
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    for execution in ("reference", "fast"):
        net.set_execution(execution)
        torch.manual_seed(3); lo = off(x)
        torch.manual_seed(3); ln = net(x, s.weights())
        wts = [q for q in off.parameters() if all(q is not z for z in off.arch_parameters())]
        P = len(wts)
        go = torch.autograd.grad(F.cross_entropy(lo, y), [*wts, *off.arch_parameters()])
        gn = torch.autograd.grad(F.cross_entropy(ln, y), [*net.parameters(), s.arch["alpha_normal"], s.arch["alpha_reduce"]])
        print(f"P-DARTS {name} [{execution}]: logits {rel(ln, lo):.1e}, weight grads {worst(gn[:P], go[:P]):.1e}, "
              f"alpha grads {worst(gn[P:], go[P:]):.1e}")

# ---- the prunings and the final cells, from the same α at the end of each stage
logged = []
logging.info = lambda fmt, *a: logged.append(str(fmt) % a if a else str(fmt))
g = np.random.RandomState(7)
cfg, s, net, spec = ours("p-darts", f"p_darts.layers={L}", C=C, layers=L)
sw_n, sw_r = copy.deepcopy(switches), copy.deepcopy(switches)
agree = True
for sp in range(3):
    k = sum(sw_n[0])
    an, ar = g.randn(14, k) * 1.5, g.randn(14, k) * 1.5
    if True:  # make skip_connect strong, so that it survives and the caps bind
        for e in range(14):
            ops = [PRIMS[j] for j in range(8) if sw_n[e][j]]
            if "skip_connect" in ops:
                an[e, ops.index("skip_connect")] += 6.0
    fake = types.SimpleNamespace(module=types.SimpleNamespace(
        arch_parameters=lambda: [torch.tensor(an), torch.tensor(ar)]))
    ns = dict(vars(ts)); ns.update(model=fake, sp=sp, num_to_keep=[5, 3, 1], num_to_drop=[3, 2, 2], sm_dim=-1,
                                   switches_normal=sw_n, switches_reduce=sw_r, logging=logging)
    logged.clear()
    exec(block, ns)
    sw_n, sw_r = ns["switches_normal"], ns["switches_reduce"]
    with torch.no_grad():
        s.arch["alpha_normal"].copy_(torch.tensor(an)); s.arch["alpha_reduce"].copy_(torch.tensor(ar))
    s._prune()
    if sp < 2:
        s.next_stage()
        s.init_arch_params(s.supernet_spec(10, 3), torch.device("cpu"))
        s.arch = {k: v.detach().double().requires_grad_() for k, v in s.arch.items()}
        for t, sw in (("normal", sw_n), ("reduce", sw_r)):
            o = [tuple(PRIMS[j] for j in range(8) if row[j]) for row in sw]
            if o != list(s.ops[t]):
                agree = False; print("DIFFER stage", sp, t)
    else:
        genos = [l for l in logged if l.startswith("Genotype(")]
        caps = [int(l.split(":")[1]) for l in logged if l.startswith("Number of skip-connect")]
        official = {8 - i: genos[0] for i in range(9)}  # caps that do not bind keep the uncapped genotype
        for cap, gtxt in zip(caps, genos[1:]):
            for c in range(cap, -1, -1):
                official[c] = gtxt
        variants = s.genotype_variants()
        same = 0
        for c in range(9):
            gv = variants[f"pdarts_max_skip_{c}"]
            ours_txt = f"normal={[tuple(p) for p in gv.normal]}, normal_concat=range(2, 6), reduce={[tuple(p) for p in gv.reduce]}"
            same += ours_txt in official[c].replace("Genotype(", "")
        print(f"P-DARTS prunings: kept ops after stages 1 and 2 agree: {agree}; final genotype for the 9 skip caps "
              f"8..0 agree: {same}/9 (the caps that bind here: {caps})")
