"""Where CLIP weights come from: the Hugging Face hub or its cache, a model's preprocessing settings, the
tiny offline open_clip config, and the ``--clip MODEL:PRETRAINED`` option. Scoring is in ``clip.py``."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from labkit.errors import LabkitValueError

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip's defaults, used when a model names none
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Can this machine open a connection to the Hugging Face hub (HF_ENDPOINT) within ``timeout`` seconds?

    True when a proxy is configured (a direct connection says nothing then) and False when HF_HUB_OFFLINE
    is set. Offline, open_clip would otherwise retry for about a minute before failing."""
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def cached_weights(model_name: str, pretrained: str) -> str | None:
    """The local path of open_clip weights already in the Hugging Face cache, or None."""
    import open_clip

    try:
        from huggingface_hub import try_to_load_from_cache

        repo = (open_clip.get_pretrained_cfg(model_name, pretrained) or {}).get("hf_hub", "").strip("/")
    except Exception:  # an unknown tag, or no huggingface_hub: nothing cached that we can find
        return None
    if not repo:
        return None
    for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        path = try_to_load_from_cache(repo, name)
        if isinstance(path, str):
            return path
    return None


def model_preprocess_cfg(model) -> dict:
    try:
        import open_clip

        return dict(open_clip.get_model_preprocess_cfg(model))
    except Exception:  # not an open_clip model, or an old open_clip
        return {}


def parse_preprocess(preprocess) -> tuple[int | None, tuple | None, tuple | None]:
    """(size, mean, std) read from a torchvision Compose such as open_clip's ``preprocess_val``."""
    size = mean = std = None
    for t in getattr(preprocess, "transforms", []):
        name = type(t).__name__
        if name == "Normalize":
            mean, std = tuple(t.mean), tuple(t.std)
        elif name in ("CenterCrop", "Resize", "ResizeKeepRatio") and getattr(t, "size", None) is not None:
            s = t.size
            size = int(s if isinstance(s, int) else s[0])  # CenterCrop comes last: it wins
    return size, mean, std


# --- A tiny offline model --------------------------------------------------------------------------

_CONFIG_FOLDERS: list = []  # TemporaryDirectory objects: cleaned up at exit

TINY_CLIP_NAME = "labkit-tiny-clip"
TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def register_tiny_clip_config() -> str:
    """Register TINY_CLIP_CONFIG with open_clip (through ``add_model_config``) and return its name."""
    import open_clip

    if TINY_CLIP_NAME not in open_clip.list_models():
        # open_clip rescans every registered folder whenever a config is added, so the folder must outlive
        # this call: one per process, removed when the process ends
        folder = tempfile.TemporaryDirectory(prefix="labkit-clip-")
        _CONFIG_FOLDERS.append(folder)
        (Path(folder.name) / f"{TINY_CLIP_NAME}.json").write_text(json.dumps(TINY_CLIP_CONFIG))
        open_clip.add_model_config(folder.name)
    return TINY_CLIP_NAME


def parse_clip_spec(spec: str | None) -> tuple[str, str] | None:
    """'MODEL:PRETRAINED' -> (model, pretrained); 'none' / '' / None -> None."""
    if spec is None or spec.strip().lower() in ("", "none", "off"):
        return None
    model, sep, pretrained = spec.partition(":")
    if not sep or not model or not pretrained:
        raise LabkitValueError(
            f"--clip must be MODEL:PRETRAINED (e.g. ViT-B-32:laion2b_s34b_b79k) or none, got {spec!r}."
        )
    return model, pretrained
