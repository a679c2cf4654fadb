"""One copy of a backbone's frozen weights in memory, however many runs adapt it.

The first classifier loaded on a backbone lends its backbone tensors to every later one loaded on
the same backbone (same folder, same dtype): their parameters point at the same storage, and each
run keeps only its own adapter and head. Used for inference only: nothing writes into these
tensors (deltas are assigned, not copied in; merging loads its own copy).
"""

from __future__ import annotations

import threading

import torch

_lock = threading.Lock()
_weights: dict[tuple[str, str], dict[str, torch.Tensor]] = {}


def backbone_parameters(model) -> dict[str, torch.nn.Parameter]:
    """The backbone's parameters by their name inside the backbone, whatever head model holds it."""
    prefix = model.base_model_prefix + "."
    return {name[len(prefix) :]: p for name, p in model.named_parameters() if name.startswith(prefix)}


def share_backbone(model, key: str) -> int:
    """Point `model`'s backbone parameters at the shared copy for `key`; returns how many were shared."""
    parameters = backbone_parameters(model)
    dtype = str(next(iter(parameters.values())).dtype) if parameters else ""
    with _lock:
        shared = _weights.get((key, dtype))
        if shared is None:
            _weights[(key, dtype)] = {name: p.data for name, p in parameters.items()}
            return 0
        count = 0
        for name, parameter in parameters.items():
            tensor = shared.get(name)
            if tensor is not None and tensor.shape == parameter.shape:
                parameter.data = tensor
                count += 1
        return count


def cast_keeping_shared(model, dtype: torch.dtype):
    """`model` cast to `dtype` (in place), its shared backbone tensors swapped for one shared copy in that dtype,
    made once per backbone: runs that share a backbone in float32 share it in bf16 too."""
    with _lock:
        owner = {
            tensor.data_ptr(): (key, name) for (key, _), weights in _weights.items() for name, tensor in weights.items()
        }
        for parameter in model.parameters():
            found = owner.get(parameter.data_ptr())
            if found is None or parameter.dtype == dtype:
                continue
            key, name = found
            copies = _weights.setdefault((key, str(dtype)), {})
            if name not in copies:
                copies[name] = parameter.data.to(dtype)
            parameter.data = copies[name]
    return model.to(dtype)  # the run's own tensors (a head, an adapter, a delta); shared ones are in dtype already
