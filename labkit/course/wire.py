"""What crosses between the grader and a student's kernel, and in which format.

Both directions travel as bytes over the grader's own socket (``labkit.course.channel``), never as files in
the student's folder.

Grader -> kernel: the inputs of one call of a student's function (``encode_call`` / ``decode_call``). The grader
trusts itself, so this direction may use ``torch.save``'s full pickle (models, optimisers, small callable
objects). Parameters' ``.grad`` do not survive pickling and travel beside them.

Kernel -> grader: the answer (``encode_reply`` / ``decode_reply``). The kernel is the student's, so this
direction is **data only**: safetensors bytes (tensors, nothing executable) whose metadata holds a JSON
tree of plain values (None, bool, int, float, str, lists, tuples, str-keyed dicts) that point at those
tensors. Anything else the student returns (a numpy array, a module, a generator...) arrives as a
``Foreign`` stand-in that only remembers its type's name, so a check can say "you returned a numpy array".
Sizes and depths are capped before anything is parsed.
"""

from __future__ import annotations

import json
import math
import re
import struct
from typing import Any

import torch

MAX_REPLY_BYTES = 256 * 2**20  # one reply file; a larger one is refused unread
MAX_HEADER_BYTES = 8 * 2**20  # the safetensors JSON header, metadata included
MAX_ITEMS = 20_000  # values in one reply tree
MAX_DEPTH = 16
MAX_STR = 4_000


class WireError(Exception):
    """A reply that is not what a kernel running labkit's own code writes (too big, malformed, forged)."""


# --- grader -> kernel --------------------------------------------------------------------------------


def encode_call(args: tuple, kwargs: dict) -> bytes:
    """The inputs of one call, as bytes for the kernel (pickle: this direction is trusted)."""
    import io

    modules = [(i, a) for i, a in enumerate(args) if isinstance(a, torch.nn.Module)]
    grads = {i: [None if p.grad is None else p.grad.detach().clone() for p in m.parameters()] for i, m in modules}
    buf = io.BytesIO()
    torch.save({"args": tuple(args), "kwargs": dict(kwargs), "grads": grads}, buf)
    return buf.getvalue()


def decode_call(data: bytes) -> tuple[tuple, dict]:
    """Read the inputs of one call (in the kernel): ``(args, kwargs)`` with gradients restored."""
    import io

    payload = torch.load(io.BytesIO(data), weights_only=False)
    args = payload["args"]
    for i, grads in payload["grads"].items():
        for p, g in zip(args[i].parameters(), grads):
            p.grad = g
    return args, payload["kwargs"]


# --- kernel -> grader --------------------------------------------------------------------------------


class Foreign:
    """Stands for a value of a type that does not cross the wire; ``type_name`` is "module.Class"."""

    def __init__(self, type_name: str):
        self.type_name = type_name

    def __repr__(self) -> str:
        return f"<{self.type_name} object (not transferable)>"


def foreign(type_name: str) -> Foreign:
    """A ``Foreign`` whose class carries the original module and class name, so that
    ``type(x).__module__`` / ``type(x).__name__`` read as they did in the kernel."""
    module, _, name = type_name.rpartition(".")
    name = re.sub(r"\W", "_", name)[:80] or "object"
    cls = type(name, (Foreign,), {"__module__": re.sub(r"[^\w.]", "_", module)[:120] or "builtins"})
    return cls(type_name[:200])


def state_of(value: Any) -> Any:
    """What the grader needs to see of an argument after the call: tensors (to spot in-place edits), a
    module's parameters and buffers, or what an object reports through ``_labkit_state()``."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, torch.nn.Module):
        return {k: v for k, v in value.state_dict().items()}
    report = getattr(type(value), "_labkit_state", None)
    if callable(report):
        return report(value)
    return None


def encode_reply(reply: dict) -> bytes:
    """Encode a reply tree into safetensors bytes (in the kernel)."""
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    count = [0]

    def enc(v, depth):
        count[0] += 1
        if count[0] > MAX_ITEMS or depth > MAX_DEPTH:
            return {"foreign": "builtins.too_large"}
        if v is None or isinstance(v, bool):
            return {"v": v}
        if isinstance(v, int):
            return {"v": int(v)} if abs(int(v)) < 2**62 else {"f": float(v)}
        if isinstance(v, float):
            f = float(v)
            return {"f": f if math.isfinite(f) else repr(f)}
        if isinstance(v, str):
            return {"v": str(v)[:MAX_STR]}
        if isinstance(v, torch.Tensor):
            t = v.detach()
            if t.device.type == "meta":
                return {"meta": list(t.shape), "dtype": str(t.dtype)}
            if t.layout != torch.strided or t.is_complex() or t.is_quantized:
                return {"foreign": f"torch.Tensor[{t.layout}, {t.dtype}]"}
            key = f"t{len(tensors)}"
            tensors[key] = t.cpu().as_subclass(torch.Tensor).contiguous().clone()
            return {"t": key, "rg": bool(v.requires_grad), "dev": t.device.type}
        if isinstance(v, (list, tuple)):
            return {"seq": [enc(x, depth + 1) for x in list(v)[:MAX_ITEMS]], "tuple": isinstance(v, tuple)}
        if isinstance(v, dict) and all(isinstance(k, str) for k in v):
            return {"map": {str(k)[:200]: enc(x, depth + 1) for k, x in list(v.items())[:MAX_ITEMS]}}
        return {"foreign": f"{type(v).__module__}.{type(v).__qualname__}"}

    tree = enc(reply, 0)
    return save(tensors, metadata={"labkit": json.dumps(tree)})


def decode_reply(data: bytes) -> Any:
    """Read a reply sent by the kernel (in the grader): plain values and tensors only, never code."""
    size = len(data)
    if size > MAX_REPLY_BYTES:
        raise WireError(f"the reply is {size / 2**20:.0f} MB (limit {MAX_REPLY_BYTES // 2**20} MB)")
    if len(data) < 8:
        raise WireError("the reply is truncated")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > MAX_HEADER_BYTES or 8 + header_len > len(data):
        raise WireError("the reply's header is malformed")
    try:
        header = json.loads(data[8 : 8 + header_len])
        tree = json.loads(header["__metadata__"]["labkit"])
    except Exception as exc:
        raise WireError(f"the reply's header is malformed ({type(exc).__name__})") from None
    from safetensors.torch import load

    try:
        tensors = load(data)
    except Exception as exc:
        raise WireError(f"the reply's tensors are malformed ({type(exc).__name__})") from None
    count = [0]

    def dec(node, depth):
        count[0] += 1
        if count[0] > MAX_ITEMS or depth > MAX_DEPTH or not isinstance(node, dict):
            raise WireError("the reply's structure is malformed")
        if "v" in node:
            v = node["v"]
            if v is None or isinstance(v, (bool, int, str)):
                return v
            raise WireError("the reply holds an unexpected value")
        if "f" in node:
            f = node["f"]
            if isinstance(f, (int, float)) and not isinstance(f, bool):
                return float(f)
            if f in ("nan", "inf", "-inf"):
                return float(f)
            raise WireError("the reply holds an unexpected number")
        if "t" in node:
            t = tensors.get(node["t"]) if isinstance(node["t"], str) else None
            if t is None:
                raise WireError("the reply names a tensor it does not hold")
            if node.get("rg") is True and t.is_floating_point():
                t.requires_grad_(True)
            return t
        if "meta" in node:
            shape = node["meta"]
            if not (
                isinstance(shape, list)
                and len(shape) <= 16
                and all(isinstance(s, int) and 0 <= s < 2**31 for s in shape)
            ):
                raise WireError("the reply holds a malformed shape")
            dtype = getattr(torch, str(node.get("dtype", "")).replace("torch.", ""), None)
            return torch.empty(shape, device="meta", dtype=dtype if isinstance(dtype, torch.dtype) else torch.float32)
        if "seq" in node:
            items = [dec(x, depth + 1) for x in node["seq"]]
            return tuple(items) if node.get("tuple") else items
        if "map" in node:
            return {str(k): dec(x, depth + 1) for k, x in node["map"].items()}
        if "foreign" in node:
            return foreign(str(node["foreign"]))
        raise WireError("the reply's structure is malformed")

    return dec(tree, 0)
