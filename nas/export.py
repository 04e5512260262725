"""`nas export`: a retrained network to ONNX (and int8), checked against torch; and the measured
peak activation memory the closed form (`nas.count.count_peak_memory`) is proven against."""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import nn

from nas.arch import ArchSpec

# Ops that hold no tensor of their own under count_peak_memory's schedule: no-ops at inference,
# views, and activations (fused into the op before them, which they then must be the only reader of).
NO_OPS = (nn.Dropout, nn.Identity)
VIEWS = (torch.flatten, operator.getitem, "view", "reshape", "flatten", "unsqueeze")
ACTIVATIONS = (nn.ReLU, nn.ReLU6, F.relu, F.relu6, torch.relu, torch.sigmoid, "relu", "sigmoid")


def graph_peak_memory(model: nn.Module, spec: ArchSpec, dtype_bytes: int = 1) -> int:
    """The peak activation bytes of one image's inference, measured: `model` traced with torch.fx,
    BatchNorm folded into its convs (torch's own fuse pass), each node's tensor shape propagated
    from an input of the spec's shape, then a liveness walk in graph order: a tensor lives from the node that
    makes it to its last reader (through the views and activations that alias it)."""
    from torch.fx.experimental.optimization import fuse
    from torch.fx.passes.shape_prop import ShapeProp

    graph = fuse(model.eval()).to("meta")  # a deep copy; on the meta device shapes propagate without arithmetic
    ShapeProp(graph).propagate(torch.zeros(1, spec.in_channels, spec.image_size, spec.image_size, device="meta"))
    modules = dict(graph.named_modules())
    nodes = list(graph.graph.nodes)
    index = {n: i for i, n in enumerate(nodes)}
    buffer: dict[torch.fx.Node, torch.fx.Node] = {}  # node -> the node whose tensor it is
    for n in nodes:
        if n.op == "output":
            continue
        what = modules[n.target] if n.op == "call_module" else n.target
        source = n.args[0] if n.args and isinstance(n.args[0], torch.fx.Node) else None
        kind = type(what) if n.op == "call_module" else what
        aliases = kind in NO_OPS or kind in VIEWS or (kind in ACTIVATIONS and len(source.users) == 1)
        buffer[n] = buffer[source] if aliases else n
    last = {b: index[b] for b in set(buffer.values())}
    for n in nodes:
        for arg in n.all_input_nodes:
            last[buffer[arg]] = max(last[buffer[arg]], index[n])
    size = {b: b.meta["tensor_meta"].shape.numel() for b in last}
    return dtype_bytes * max(sum(size[b] for b in last if index[b] <= i <= last[b]) for i in range(len(nodes)))
