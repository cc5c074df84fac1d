"""The two seams and the layering: a new space is one module (a toy space, registered here, searched by DARTS
and GDAS end to end and trained by train-final), the edge/execution contract is safe, and the packages
import each other only downwards."""

from __future__ import annotations

import ast
import json
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import pytest
import torch
from torch import nn

from nasbench import registry
from nasbench.config import resolve_final_config, resolve_search_config
from nasbench.errors import ConfigError, GenotypeError
from nasbench.spaces.base import SearchSpace, Topology
from nasbench.spaces.edges import MixedOp, uses_contribute
from nasbench.spaces.genotypes import load_genotype, space_of

PACKAGE = Path(__file__).resolve().parent.parent / "nasbench"


# ---------------------------------------------------------------------------------------------- a toy space
@dataclass(frozen=True)
class ToyGenotype:
    """One cell: per node one (op, input) pair."""

    cell: tuple
    space: str = "toy"
    meta: dict = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict:
        return {"space": self.space, "cell": [list(p) for p in self.cell], **self.meta}

    def with_meta(self, **meta: Any) -> "ToyGenotype":
        return replace(self, meta={**self.meta, **meta})


class ToyNet(nn.Module):
    """Stem conv, ``layers`` cells of the toy topology (the cell's output is its last node), pooling, linear."""

    def __init__(self, C: int, layers: int, num_classes: int, in_channels: int, make_cell_edge, topology):
        super().__init__()
        self.topology = topology
        self.stem = nn.Conv2d(in_channels, C, 3, padding=1, bias=False)
        self.cells = nn.ModuleList(nn.ModuleList(make_cell_edge(e) for e in range(topology.num_edges))
                                   for _ in range(layers))
        self.classifier = nn.Linear(C, num_classes)

    def run_cell(self, edges: nn.ModuleList, h: torch.Tensor, apply) -> torch.Tensor:
        states = [h]
        for node in range(self.topology.nodes):
            terms = [t for e in self.topology.node_edges(node)
                     if (t := apply(e, edges[e], states[self.topology.edges[e][1]])) is not None]
            states.append(sum(terms))
        return states[-1]

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return self.classifier(h.mean(dim=(2, 3)))


class ToySearchNet(ToyNet):
    def forward(self, x: torch.Tensor, weights: Mapping[str, Any]) -> torch.Tensor:
        w = weights["cell"]

        def apply(e, edge, s):
            out = edge(s, w.ops[e])
            return out if out is None or w.edges is None else w.edges[e] * out

        h = self.stem(x)
        for edges in self.cells:
            h = self.run_cell(edges, h, apply)
        return self.head(h)


class ToyEvalNet(ToyNet):
    def forward(self, x: torch.Tensor):
        h = self.stem(x)
        for edges in self.cells:
            h = self.run_cell(edges, h, lambda e, edge, s: edge(s) if edge is not None else None)
        return self.head(h), None


def toy_op(name: str, C: int) -> nn.Module:
    if name == "conv":
        return nn.Sequential(nn.ReLU(), nn.Conv2d(C, C, 3, padding=1, bias=False), nn.BatchNorm2d(C, affine=False))
    return nn.Identity()


class ToySpace(SearchSpace):
    """2 nodes (node 0 ← input; node 1 ← input or node 0, one kept), 2 ops, one cell type."""

    name = "toy"
    description = "a toy space of the tests"
    primitives = ("conv", "skip")
    zero_op = None
    parameter_free = frozenset({"skip"})
    cell_types = ("cell",)

    @property
    def topology(self) -> Topology:
        return Topology.dense(n_inputs=1, nodes=2, keep=1, output=(2,))

    def search_op(self, name: str, C: int, stride: int) -> nn.Module:
        return toy_op(name, C)

    def build_supernet(self, spec, make_edge, *, execution="reference", memory_efficient=False):
        ops = spec.ops("cell")
        return ToySearchNet(spec.C, spec.layers, spec.num_classes, spec.in_channels,
                            lambda e: make_edge(spec.C, 1, ops[e]), self.topology)

    def build_eval_network(self, genotype, *, C, layers, num_classes, auxiliary, in_channels=3, imagenet=False):
        chosen = {self.topology.edge_index(node, src): op for node, (op, src) in enumerate(genotype.cell)}
        return ToyEvalNet(C, layers, num_classes, in_channels,
                          lambda e: toy_op(chosen[e], C) if e in chosen else None, self.topology)

    def make_genotype(self, cells, meta=None):
        return ToyGenotype(tuple(tuple(p) for p in cells["cell"]), meta=dict(meta or {}))

    def validate(self, g):
        if len(g.cell) != 2:
            raise GenotypeError(f"a toy cell has 2 nodes, got {len(g.cell)}")
        for node, (op, src) in enumerate(g.cell):
            if op not in self.primitives or src not in self.topology.sources(node):
                raise GenotypeError(f"node {node}: bad pair {(op, src)}")
        return g

    def genotype_from_dict(self, d):
        meta = {k: v for k, v in d.items() if k not in ("space", "cell")}
        return self.validate(ToyGenotype(tuple(tuple(p) for p in d["cell"]), meta=meta))

    def format_text(self, g):
        return " ".join(f"{op}<-{src}" for op, src in g.cell)

    def random_genotype(self, seed):
        rng = random.Random(seed)
        return ToyGenotype(tuple((rng.choice(self.primitives), rng.choice(self.topology.sources(n)))
                                 for n in range(2)))

    def describe(self, g):
        return ["node", "cell"], [[str(n), f"{op} ← {src}"] for n, (op, src) in enumerate(g.cell)]


@pytest.fixture()
def toy_space():
    registry.register("space", "toy", ToySpace)
    try:
        yield ToySpace
    finally:
        registry.unregister("space", "toy")


def toy_eval_params(genotype: ToyGenotype, C: int, layers: int, num_classes: int, in_channels: int) -> int:
    """Counted by hand: stem, one 3×3 conv per 'conv' pair per cell, the classifier."""
    convs = sum(1 for op, _ in genotype.cell if op == "conv")
    return in_channels * C * 9 + layers * convs * C * C * 9 + C * num_classes + num_classes


TOY = ["model.space=toy", "data.dataset=synthetic", "data.image_size=8", "data.num_train=32", "data.num_test=16",
       "data.num_classes=3", "model.channels=4", "model.layers=2", "batch_size=8", "epochs=2", "device=cpu"]


@pytest.mark.parametrize("algo", ["darts", "gdas"])
def test_a_new_space_is_one_module_searched_and_trained_end_to_end(toy_space, algo, tmp_path, one_thread):
    from nasbench.final.train import train_final
    from nasbench.search.trainer import search

    cfg = resolve_search_config(algo, overrides=[*TOY, f"out={tmp_path / 'search'}"])
    run, genotype = search(cfg, show_progress=False)
    assert isinstance(genotype, ToyGenotype) and genotype.meta["algo"] == algo
    best = load_genotype(run.best_path)
    assert best == genotype and space_of(best).name == "toy"
    ToySpace().validate(best)
    records = [json.loads(line) for line in run.metrics_path.read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1] and records[-1]["genotype"]["space"] == "toy"
    # α is [3 edges, 2 ops] per run: the toy topology, not the DARTS one
    state = torch.load(run.arch_path(1), weights_only=True)
    assert state["arch"]["alpha_cell"].shape == (3, 2)

    fcfg = resolve_final_config(overrides=[f"genotype={run.best_path}", "data.dataset=synthetic",
                                           "data.image_size=8", "data.num_train=32", "data.num_test=16",
                                           "data.num_classes=3", "model.channels=4", "model.layers=2",
                                           "model.auxiliary=false", "epochs=1", "batch_size=8", "device=cpu",
                                           f"out={tmp_path / 'final'}"])
    _, result = train_final(fcfg, show_progress=False)
    assert result["params"] == toy_eval_params(best, C=4, layers=2, num_classes=3, in_channels=3)
    assert result["test_images"] == 16


def test_an_algorithm_that_does_not_support_a_space_says_so(toy_space):
    from nasbench.algorithms.darts import Darts

    class DartsSpaceOnly(Darts):
        name = "darts-space-only"
        spaces = ("darts",)

    registry.register("algorithm", DartsSpaceOnly.name, DartsSpaceOnly)
    try:
        with pytest.raises(ConfigError, match=r"darts-space-only does not support the toy space \(it runs on: darts\)"):
            resolve_search_config("darts-space-only", overrides=TOY)
        resolve_search_config("darts-space-only", overrides=["data.dataset=synthetic"])
    finally:
        registry.unregister("algorithm", DartsSpaceOnly.name)
    # what an algorithm needs of a space is checked in one line too
    with pytest.raises(ConfigError, match="sgas ranks edges by their weight off the zero op; the toy space has none"):
        resolve_search_config("sgas", overrides=TOY)
    with pytest.raises(ConfigError, match="p_darts.num_to_keep must decrease from 2 ops"):
        resolve_search_config("p-darts", overrides=TOY)


def test_unknown_space_is_one_line():
    from nasbench.errors import NasError

    with pytest.raises(NasError, match="unknown space 'nope'; choose one of: darts"):
        resolve_search_config("darts", overrides=["model.space=nope"])


# ---------------------------------------------------------------------------------------------- the edge contract
class DoublingEdge(MixedOp):
    """Overrides forward only: a fast execution must run this forward, not MixedOp.contribute."""

    def forward(self, x, w):
        out = super().forward(x, w)
        return None if out is None else 2 * out


class DoublingEdgeWithContribute(DoublingEdge):
    def contribute(self, node, src, w, scale, part="out"):
        super().contribute(node, src, w, None if scale is None else 2 * scale, part)


def test_contribute_is_used_only_by_edges_that_opt_in():
    from nasbench.spaces.darts.ops import search_op

    assert uses_contribute(MixedOp(4, 1, ["skip_connect"], search_op))
    assert not uses_contribute(DoublingEdge(4, 1, ["skip_connect"], search_op))
    assert uses_contribute(DoublingEdgeWithContribute(4, 1, ["skip_connect"], search_op))


@pytest.mark.parametrize("edge_cls", [DoublingEdge])
def test_an_edge_that_overrides_only_forward_is_exact_in_the_fast_execution(edge_cls, one_thread):
    """The probe of the structure issue: before the contract, fast differed from reference by 0.72."""
    from nasbench.algorithms.base import create_strategy

    cfg = resolve_search_config("darts", overrides=["data.dataset=synthetic", "model.channels=4",
                                                    "model.layers=3"])
    s = create_strategy("darts", cfg)
    s.make_edge = lambda C, stride, ops: edge_cls(C, stride, ops, s.space.search_op)
    spec = s.supernet_spec(3, 3)
    torch.manual_seed(0)
    ref = s.build_supernet(spec, execution="reference")
    fast = s.build_supernet(spec, execution="fast")
    fast.load_state_dict(ref.state_dict())
    s.init_arch_params(spec, torch.device("cpu"))
    x = torch.randn(4, 3, 8, 8)
    plain = create_strategy("darts", cfg)
    plain_net = plain.build_supernet(spec, execution="reference")
    plain_net.load_state_dict(ref.state_dict())
    plain.init_arch_params(spec, torch.device("cpu"))
    plain.arch = s.arch
    out_ref, out_fast, out_plain = s.forward(ref, x), s.forward(fast, x), plain.forward(plain_net, x)
    assert torch.allclose(out_fast, out_ref, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out_ref, out_plain, atol=1e-3)  # the probe edge does change the result


# ---------------------------------------------------------------------------------------------- layering
def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in found if m.startswith("nasbench")}


def _violations(package: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in sorted((PACKAGE / package).rglob("*.py")):
        for mod in _imports(path):
            if any(mod == f or mod.startswith(f + ".") for f in forbidden):
                bad.append(f"{path.relative_to(PACKAGE.parent)} imports {mod}")
    return bad


@pytest.mark.parametrize("package, forbidden", [
    ("spaces", ("nasbench.cli", "nasbench.algorithms", "nasbench.search", "nasbench.final")),
    ("algorithms", ("nasbench.cli", "nasbench.search", "nasbench.final")),
    ("engine", ("nasbench.cli", "nasbench.algorithms", "nasbench.spaces", "nasbench.search", "nasbench.final")),
    ("data", ("nasbench.cli", "nasbench.algorithms", "nasbench.spaces", "nasbench.search", "nasbench.final")),
])
def test_layering(package: str, forbidden: tuple[str, ...]):
    assert _violations(package, forbidden) == []


def test_nothing_outside_a_space_names_the_darts_space():
    """The DARTS space's modules are reached only through the seam (registry, genotype files)."""
    allowed = {"spaces"}
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in allowed:
            continue
        bad += [f"{rel} imports {m}" for m in _imports(path) if m.startswith("nasbench.spaces.darts")]
    assert bad == []


def test_every_space_and_algorithm_is_registered_by_importing_its_package():
    import nasbench.algorithms
    import nasbench.spaces  # noqa: F401

    assert {"darts", "gdas", "pc-darts", "p-darts", "sgas"} <= set(registry.names("algorithm"))
    assert "darts" in registry.names("space")
    assert all(registry.get("algorithm", a).spaces is None for a in registry.names("algorithm"))
