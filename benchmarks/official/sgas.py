"""SGAS (lightaime/sgas cnn/) beside nasbench's SGAS: the greedy decisions (Criterion 1 and 2) epoch by epoch,
the forward and gradients with decided and pruned edges, second order, and the genotype."""
import copy, os, sys, types
from common import *
ROOT = os.path.join(official_root(), "cnn")
from nasbench.algorithms.sgas import UNDECIDED

sys.modules["tensorboardX"] = types.SimpleNamespace(SummaryWriter=lambda *a, **k: types.SimpleNamespace(
    add_image=lambda *a, **k: None, add_scalar=lambda *a, **k: None))
os.makedirs(SCRATCH, exist_ok=True)
os.chdir(SCRATCH)
C, L = 8, 5
results = {}
for criterion in (1, 2):
    sys.argv = ["train_search.py", "--save", "x", "--warmup_dec_epoch", "0", "--decision_freq", "1",
                *(["--use_history"] if criterion == 2 else [])]
    (model_search, architect, ts) = load_official(ROOT, ["model_search", "architect", "train_search"])
    cfg, s, net, spec = ours("sgas", "sgas.unrolled=true", f"sgas.criterion={criterion}", "sgas.warmup_epochs=0",
                             "sgas.decision_freq=1", "scale_schedules=false", "epochs=12", "sgas.post_train=0",
                             C=C, layers=L)
    torch.manual_seed(1)
    off = model_search.Network(C, 10, L, torch.nn.CrossEntropyLoss()).double()
    copy_params(off, net)
    off.normal_selected_idxs = torch.tensor(14 * [-1], dtype=torch.int)
    off.reduce_selected_idxs = torch.tensor(14 * [-1], dtype=torch.int)
    off.normal_candidate_flags = torch.tensor(14 * [True], dtype=torch.bool)
    off.reduce_candidate_flags = torch.tensor(14 * [True], dtype=torch.bool)
    hist = {"normal": [], "reduce": []}
    g = torch.Generator().manual_seed(5)
    agree = True
    for epoch in range(9):
        with torch.no_grad():  # an epoch's α: undecided rows move, decided rows stay (frozen)
            for t, alist in (("normal", off.alphas_normal), ("reduce", off.alphas_reduce)):
                for e, a in enumerate(alist):
                    if a.requires_grad:
                        a.add_(0.3 * torch.randn(8, generator=g))
                s.arch[f"alpha_{t}"].copy_(torch.stack(alist))
        for t in ("normal", "reduce"):
            alist = off.alphas_normal if t == "normal" else off.alphas_reduce
            sel, flags = getattr(off, f"{t}_selected_idxs"), getattr(off, f"{t}_candidate_flags")
            _, sel, flags = ts.edge_decision(t, alist, sel, flags, hist[t], epoch, off, ts.args)
            setattr(off, f"{t}_selected_idxs", sel); setattr(off, f"{t}_candidate_flags", flags)
        s.on_epoch_end(epoch, net)
        for t in ("normal", "reduce"):
            o = [int(v) for v in getattr(off, f"{t}_selected_idxs")]
            n = [int(v) for v in s.selected[t]]
            if o != n:
                agree = False
                print("DIFFER", criterion, epoch, t, o, n)
        if epoch == 4:  # mid-search: the forced genotype (undecided nodes completed by importance)
            mid_off = off.get_genotype(force=True)
            mid_ours = s.derive()
            same_mid = [tuple(x) for x in mid_off.normal] == [tuple(x) for x in mid_ours.normal] and \
                [tuple(x) for x in mid_off.reduce] == [tuple(x) for x in mid_ours.reduce]
        if epoch == 3 and criterion == 1:  # forward, gradients, second order with decided and pruned edges
            keys = [f"alpha_normal", f"alpha_reduce"]
            torch.manual_seed(2)
            xt, yt = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
            xv, yv = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
            for execution in ("reference", "fast"):
                net.set_execution(execution)
                n2, o2 = copy.deepcopy(net), copy.deepcopy(off)
                lo = o2(xt); ln = n2(xt, s.weights())
                P = len(list(o2.parameters()))
                live = [a for a in o2.arch_parameters() if a.requires_grad]
                go = torch.autograd.grad(F.cross_entropy(lo, yt), [*o2.parameters(), *live], allow_unused=True)
                it = iter(go[P:])
                go = [*go[:P], *[next(it) if a.requires_grad else None for a in o2.arch_parameters()]]
                gn = torch.autograd.grad(F.cross_entropy(ln, yt), [*n2.parameters(), *[s.arch[k] for k in keys]],
                                         allow_unused=True)
                ga_off = torch.stack([x if x is not None else torch.zeros(8) for x in go[P:]]).reshape(2, 14, 8)
                print(f"SGAS 1st order, {sum(int(v) >= 0 for v in off.normal_selected_idxs)} normal edges decided or "
                      f"pruned [{execution}]: logits {rel(ln, lo):.1e}, weight grads {worst(gn[:P], go[:P]):.1e}, "
                      f"alpha grads {worst(list(gn[P:]), list(ga_off)):.1e}")
                args = types.SimpleNamespace(momentum=0.9, weight_decay=3e-4, arch_learning_rate=3e-4,
                                             arch_weight_decay=1e-3)
                oo = torch.optim.SGD(o2.parameters(), 0.025, momentum=0.9, weight_decay=3e-4)
                on = torch.optim.SGD(n2.parameters(), 0.025, momentum=0.9, weight_decay=3e-4)
                # as in a run: a step before the decisions (every weight gets a momentum buffer), one after
                saved = (o2.normal_selected_idxs, o2.reduce_selected_idxs, copy.deepcopy(s.selected))
                o2.normal_selected_idxs = o2.reduce_selected_idxs = torch.tensor(14 * [-1], dtype=torch.int)
                s.selected = {t: [-1] * 14 for t in s.selected}
                assert all(v == UNDECIDED for v in s.selected["normal"])
                F.cross_entropy(o2(xt), yt).backward(); oo.step(); oo.zero_grad()
                F.cross_entropy(n2(xt, s.weights()), yt).backward(); on.step(); on.zero_grad()
                o2.normal_selected_idxs, o2.reduce_selected_idxs, s.selected = saved
                F.cross_entropy(o2(xt), yt).backward(); oo.step(); oo.zero_grad()
                F.cross_entropy(n2(xt, s.weights()), yt).backward(); on.step(); on.zero_grad()
                for a in [*o2.arch_parameters(), *s.arch.values()]: a.grad = None
                ar = architect.Architect(o2, args)
                ar._backward_step_unrolled(xt, yt, xv, yv, 0.025, oo)
                for a in o2.arch_parameters():  # as Architect.step does for frozen rows
                    if not a.requires_grad:
                        a.grad = None
                s.arch_backward(ArchStepContext(n2, (xt, yt), (xv, yv), on, 0.025, F.cross_entropy))
                ga = torch.stack([a.grad if a.grad is not None else torch.zeros(8) for a in o2.arch_parameters()])
                gours = torch.cat([s.arch[k].grad for k in keys])
                # nasbench masks the frozen rows out of the update; compare the rows that move
                frozen = torch.cat([s.frozen_rows()[k] for k in keys])
                print(f"SGAS 2nd order [{execution}]: alpha grads of the undecided rows "
                      f"{rel(gours[~frozen], ga[~frozen]):.1e}")
                for a in s.arch.values(): a.grad = None
            net.set_execution("reference")
    final_off, final_ours = off.get_genotype(force=False), s.derive()
    same = [tuple(x) for x in final_off.normal] == [tuple(x) for x in final_ours.normal] and \
        [tuple(x) for x in final_off.reduce] == [tuple(x) for x in final_ours.reduce]
    print(f"SGAS criterion {criterion}: 9 epochs of decisions agree: {agree}; forced mid-search genotype same: "
          f"{same_mid}; final genotype same: {same}\n  {final_ours.normal}\n  {final_off.normal}")
