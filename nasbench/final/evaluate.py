"""Re-evaluating a trained cell (``nas eval``) and exporting it (``nas export``): a train-final run
directory's weights, loaded into the evaluation network, tested again or written as ``torch.export`` or ONNX.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import DictConfig
from torch import nn

from nasbench import data as data_mod
from nasbench.config import data_options
from nasbench.engine.device import autocast, memory_format, resolve_device
from nasbench.engine.meters import Meter
from nasbench.engine.rundir import RunDir, check_new_file, make_parent, torch_load
from nasbench.errors import NasError, RunDirError
from nasbench.final.train import BEST_FILE, GENOTYPE_FILE, build_model, input_size, test_indices
from nasbench.spaces.genotypes import load_genotype


@torch.no_grad()
def evaluate_model(net: nn.Module, dataset: Any, indices: list[int], batch_size: int, device: torch.device,
                   mem_format: torch.memory_format, criterion: nn.Module, workers: int = 0,
                   amp: Optional[torch.dtype] = None, rank: int = 0, world: int = 1) -> Meter:
    """Loss and accuracy of ``net`` (eval mode: no auxiliary head, no drop-path) on ``dataset[indices]``
    (on rank ``rank``'s shard of them, every ``world``-th image)."""
    was = net.training
    net.eval()
    meter = Meter()
    loader = data_mod.make_loader(dataset, indices, batch_size, seed=0, epoch=0, shuffle=False, workers=workers,
                                  rank=rank, world=world)
    ctx = autocast(device, amp)
    for x, y in loader:
        x = x.to(device).contiguous(memory_format=mem_format)
        y = y.to(device)
        with ctx:
            logits, _ = net(x)
        logits = logits.float()
        meter.add(criterion(logits, y), logits, y)
    net.train(was)
    return meter


def open_final_run(run_dir: str | Path) -> tuple[RunDir, DictConfig, Any]:
    from nasbench.config import load_final_config

    run = RunDir.open(run_dir)
    cfg = load_final_config(run.config_path)
    genotype = load_genotype(run.path / GENOTYPE_FILE)
    return run, cfg, genotype


def load_trained_model(run_dir: str | Path, which: str = "last") -> tuple[nn.Module, DictConfig, RunDir, Any]:
    """The trained network of a run (no auxiliary head), in eval mode, on CPU."""
    run, cfg, genotype = open_final_run(run_dir)
    if which not in ("last", "best"):
        raise NasError(f"--checkpoint must be last or best, got {which!r}")
    path = run.checkpoint_path if which == "last" else run.path / BEST_FILE
    if which == "best" and not path.is_file():
        raise RunDirError(f"{run.path} has no {BEST_FILE}: a best checkpoint exists only with data.val_split > 0")
    state = torch_load(path)
    info = data_mod.dataset_info(cfg.data.dataset, cfg.data.data_dir, **data_options(cfg))
    net = build_model(cfg, genotype, info, auxiliary=False)
    weights = {k: v for k, v in state["net"].items() if not k.startswith("auxiliary_head.")}
    net.load_state_dict(weights)
    net.drop_path_prob = 0.0
    net.eval()
    return net, cfg, run, info


def evaluate_run(run_dir: str | Path, *, which: str = "last", device: str = "auto",
                 batch_size: Optional[int] = None) -> dict[str, Any]:
    """Re-compute the test accuracy of a train-final run from its saved weights."""
    net, cfg, run, info = load_trained_model(run_dir, which)
    dev = resolve_device(device)
    fmt = memory_format(cfg.memory_format, dev, net)
    net = net.to(dev, memory_format=fmt)
    opts = data_options(cfg)
    test = data_mod.load_dataset(cfg.data.dataset, cfg.data.data_dir, False, data_mod.test_transform(info),
                                 download=cfg.data.download, **opts)
    meter = evaluate_model(net, test, test_indices(cfg, len(test)), batch_size or cfg.eval_batch_size, dev, fmt,
                           nn.CrossEntropyLoss(), cfg.data.workers)
    return {"run": str(run.path), "checkpoint": which, "test_acc": meter.acc, "test_loss": meter.avg_loss,
            "images": meter.n}


def _weights_of(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The state_dict inside a weights file: a plain state_dict (ours, or the original DARTS code's
    ``utils.save``), or one of our checkpoints (``checkpoint.pt``/``best.pt``: its ``net``)."""
    if isinstance(obj, dict) and isinstance(obj.get("net"), dict):
        obj = obj["net"]
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise NasError(f"{path} holds no state_dict of network weights")
    return dict(obj)


def official_key(key: str) -> str:
    """A parameter name of the original DARTS code's evaluation network in our naming: ``nn.DataParallel``'s
    ``module.`` prefix dropped, and the ``op`` Sequential inside ReLUConvBN/SepConv/DilConv flattened (our
    ops are the Sequentials themselves): ``cells.0._ops.3.op.1.weight`` → ``cells.0._ops.3.1.weight``."""
    if key.startswith("module."):
        key = key[len("module."):]
    return key.replace(".op.", ".")


def load_weights(net: nn.Module, weights: dict[str, torch.Tensor], path: Path, what: str) -> None:
    """Load ``weights`` (our layout or the original code's, see :func:`official_key`) into ``net``; the
    auxiliary head's weights are dropped, BatchNorm counters absent from old files keep their value. A
    mismatch is one NasError that says what does not fit."""
    mine = net.state_dict()
    renamed = {}
    for k, v in weights.items():
        k2 = k if k in mine else official_key(k)
        if k2.startswith("auxiliary_head."):
            continue
        renamed[k2] = v
    missing = [k for k in mine if k not in renamed and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in renamed if k not in mine]
    shapes = [k for k in renamed if k in mine and tuple(renamed[k].shape) != tuple(mine[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first {unexpected[0]})")
        if shapes:
            k = shapes[0]
            parts.append(f"{len(shapes)} of another shape (first {k}: {tuple(renamed[k].shape)} in the file, "
                         f"{tuple(mine[k].shape)} in the network)")
        raise NasError(f"the weights in {path} do not fit {what}: " + "; ".join(parts)
                       + " (check --genotype, --channels, --layers and --dataset)")
    merged = {k: renamed.get(k, mine[k]) for k in mine}
    net.load_state_dict(merged)


def evaluate_weights(cfg: DictConfig, weights_path: str | Path, *, device: str = "auto",
                     batch_size: Optional[int] = None) -> dict[str, Any]:
    """Test accuracy of trained weights that did not come from a train-final run (the original scripts'
    ``test.py --model_path``): the evaluation network of ``cfg``'s genotype, dataset and size, loaded from
    ``weights_path``, evaluated on the test set in eval mode (no drop-path, no auxiliary head)."""
    from nasbench.final.train import load_final_genotype

    path = Path(weights_path)
    weights = _weights_of(torch_load(path), path)
    genotype = load_final_genotype(cfg)
    opts = data_options(cfg)
    info = data_mod.dataset_info(cfg.data.dataset, cfg.data.data_dir, **opts)
    net = build_model(cfg, genotype, info, auxiliary=False)
    what = (f"the {cfg.genotype} network (C={cfg.model.channels}, {cfg.model.layers} cells, "
            f"{info.num_classes} classes)")
    load_weights(net, weights, path, what)
    net.drop_path_prob = 0.0
    net.eval()
    dev = resolve_device(device)
    fmt = memory_format(cfg.memory_format, dev, net)
    net = net.to(dev, memory_format=fmt)
    test = data_mod.load_dataset(cfg.data.dataset, cfg.data.data_dir, False, data_mod.test_transform(info),
                                 download=cfg.data.download, **opts)
    meter = evaluate_model(net, test, test_indices(cfg, len(test)), batch_size or cfg.eval_batch_size, dev, fmt,
                           nn.CrossEntropyLoss(), cfg.data.workers)
    return {"weights": str(path), "genotype": str(cfg.genotype), "dataset": cfg.data.dataset,
            "test_acc": meter.acc, "test_loss": meter.avg_loss, "images": meter.n}


class LogitsOnly(nn.Module):
    """The deployable model: images → logits (the evaluation network's auxiliary output dropped)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[0]


def export_run(run_dir: str | Path, fmt: str = "pt2", output: Optional[str | Path] = None, *,
               which: str = "last", batch: int = 4, atol: float = 1e-4, force: bool = False) -> dict[str, Any]:
    """Export the trained model (eval mode, no auxiliary head, no drop-path) and check it on a batch. An
    ``output`` that exists is overwritten only with ``force`` (the run's own RUN_DIR/model.FORMAT always)."""
    if fmt not in ("pt2", "onnx"):
        raise NasError(f"--format must be pt2 or onnx, got {fmt!r}")
    if output:
        check_new_file(output, force, "-o/--out")
    if fmt == "onnx":
        missing = [m for m in ("onnx", "onnxscript") if not _importable(m)]
        if missing:
            raise NasError(f"ONNX export needs {' and '.join(missing)}, which are not installed: "
                           "pip install 'nasbench[onnx]'")
    net, cfg, run, info = load_trained_model(run_dir, which)
    model = LogitsOnly(net).eval()
    size = input_size(cfg, info)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((batch, *size), generator=gen)
    with torch.no_grad():
        expected = model(x)
    target = Path(output) if output else run.path / f"model.{fmt}"
    make_parent(target)
    batch_dim = torch.export.Dim("batch", min=1, max=4096)
    dynamic = True
    try:
        ep = torch.export.export(model, (x,), dynamic_shapes={"x": {0: batch_dim}})
    except Exception:  # a model that specialises the batch size: export it static
        dynamic = False
        ep = torch.export.export(model, (x,))
    if fmt == "pt2":
        tmp = target.with_name(f".tmp-{target.name}")
        torch.export.save(ep, str(tmp))
        tmp.replace(target)
        loaded = torch.export.load(str(target)).module()
        with torch.no_grad():
            got = loaded(x)
    else:
        tmp = target.with_name(f".tmp-{target.name}")
        torch.onnx.export(model, (x,), str(tmp), dynamo=True,
                          dynamic_shapes={"x": {0: batch_dim}} if dynamic else None)
        tmp.replace(target)
        got = _run_onnx(target, x)
    err = float((got - expected).abs().max())
    agree = float((got.argmax(1) == expected.argmax(1)).float().mean())
    if not err <= atol * max(1.0, float(expected.abs().max())):
        raise NasError(f"the exported model's outputs differ from the PyTorch model's by {err:.3g} on a test batch")
    return {"run": str(run.path), "format": fmt, "path": str(target), "input": [batch, *size],
            "dynamic_batch": dynamic, "max_abs_diff": err, "argmax_agreement": agree}


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _run_onnx(path: Path, x: torch.Tensor) -> torch.Tensor:
    """Run the ONNX file with onnxruntime when installed, else onnx's reference evaluator."""
    import numpy as np

    if _importable("onnxruntime"):
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return torch.from_numpy(np.asarray(sess.run(None, {name: x.numpy()})[0]))
    import onnx
    from onnx.reference import ReferenceEvaluator

    model = onnx.load(str(path))
    ref = ReferenceEvaluator(model)
    name = model.graph.input[0].name
    return torch.from_numpy(np.asarray(ref.run(None, {name: x.numpy()})[0]))
