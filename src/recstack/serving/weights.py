"""Tower weights in a bundle: written as safetensors (or .npz), read back with bounded allocation.

Loading a tower never trusts the sizes its JSON config claims: the architecture
is first built on PyTorch's ``meta`` device (shapes only, nothing allocated),
and its ``state_dict`` shapes must equal the tensors the weights file's header
declares - which in turn must account for exactly the file's listed bytes. A
config claiming an embedding of 10^12 ids is refused before a byte is
allocated for it; the real module is built only after that check.
"""

from __future__ import annotations

import json
import math
import struct
import zipfile
from pathlib import Path

import torch
from torch import nn

from ..core.errors import ConfigError
from ..models.tower_codec import load_npz_state, save_npz_state, tower_from_config
from .sandbox import BundleFiles, UnsafeBundleError, npy_header

__all__ = ["load_tower", "save_weights"]

# Bytes per element of the safetensors dtypes torch can write.
_SAFETENSORS_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2,
                      "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_MAX_SAFETENSORS_HEADER = 100 << 20        # the safetensors library's own bound


def save_weights(module: nn.Module, stem: Path) -> str:
    """state_dict -> ``stem.safetensors`` (or ``stem.npz`` without safetensors); returns the file name."""
    try:
        from safetensors.torch import save_file
    except ImportError:
        path = stem.with_suffix(".npz")
        save_npz_state(module, path)
        return path.name
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    path = stem.with_suffix(".safetensors")
    # Tied parameters share storage; safetensors wants distinct tensors.
    save_file({k: v.clone() for k, v in state.items()}, str(path))
    return path.name


def _safetensors_shapes(path: Path, name: str, size: int) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from a safetensors header, each tensor's bytes checked against the file."""
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) != 8:
            raise UnsafeBundleError(f"bundle file {name} is too short to be safetensors; refusing it.")
        (length,) = struct.unpack("<Q", head)
        if length > min(size - 8, _MAX_SAFETENSORS_HEADER):
            raise UnsafeBundleError(f"bundle file {name} claims a {length}-byte header in {size} bytes; refusing it.")
        try:
            header = json.loads(handle.read(length).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise UnsafeBundleError(f"bundle file {name} has a corrupt safetensors header ({exc}).") from None
    data = size - 8 - length
    shapes: dict[str, tuple[int, ...]] = {}
    if not isinstance(header, dict):
        raise UnsafeBundleError(f"bundle file {name} has a corrupt safetensors header.")
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            shape = tuple(int(n) for n in info["shape"])
            start, end = (int(n) for n in info["data_offsets"])
            width = _SAFETENSORS_BYTES[info["dtype"]]
        except (KeyError, TypeError, ValueError):
            raise UnsafeBundleError(f"bundle file {name}: tensor {key!r} has a malformed header entry.") from None
        if min(shape, default=0) < 0 or not 0 <= start <= end <= data or end - start != math.prod(shape) * width:
            raise UnsafeBundleError(f"bundle file {name}: tensor {key!r} claims shape {shape}, which its "
                                    f"{end - start} bytes (of {data}) do not hold; refusing it.")
        shapes[key] = shape
    return shapes


def _npz_shapes(path: Path, name: str, size: int) -> dict[str, tuple[int, ...]]:
    """Array name -> shape from an uncompressed .npz (np.savez), each member checked against its bytes."""
    shapes: dict[str, tuple[int, ...]] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if sum(m.file_size for m in members) > size:
                raise UnsafeBundleError(f"bundle file {name} unpacks to more bytes than it has; refusing it.")
            for member in members:
                if member.compress_type != zipfile.ZIP_STORED or not member.filename.endswith(".npy"):
                    raise UnsafeBundleError(f"bundle file {name}: member {member.filename!r} is not a stored .npy "
                                            "array (np.savez writes only those); refusing it.")
                with archive.open(member) as handle:
                    shape, dtype, offset = npy_header(handle, f"{name}:{member.filename}")  # type: ignore[arg-type]
                if offset + math.prod(shape) * dtype.itemsize != member.file_size:
                    raise UnsafeBundleError(f"bundle file {name}: {member.filename} claims shape {shape}, which "
                                            "its bytes do not hold; refusing it.")
                shapes[member.filename[:-4]] = shape
    except zipfile.BadZipFile as exc:
        raise UnsafeBundleError(f"bundle file {name} is not a readable .npz archive ({exc}).") from None
    return shapes


def _read_state(path: Path, name: str) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ImportError(f"{name} needs the safetensors package: pip install safetensors") from None
        return load_file(str(path))
    return load_npz_state(path)


def load_tower(files: BundleFiles, config_name: str, weights_name: str) -> nn.Module:
    """Rebuild a tower from its listed JSON config and load its listed weights file (eval mode).

    Raises:
        UnsafeBundleError: the config's parameter shapes are not the ones the weights file holds
            (checked on the meta device, before anything is allocated).
        ConfigError: an unknown tower type or malformed config.
    """
    config = files.read_json(config_name)
    weights = files.path(weights_name)
    size = files.files[weights_name]["bytes"]
    if weights.suffix == ".safetensors":
        stored = _safetensors_shapes(weights, weights_name, size)
    elif weights.suffix == ".npz":
        stored = _npz_shapes(weights, weights_name, size)
    else:
        raise ConfigError(f"unknown weights format {weights_name}; bundles hold .safetensors or .npz weights.")
    try:
        with torch.device("meta"):
            skeleton = tower_from_config(config)
    except RecursionError:
        raise UnsafeBundleError(f"bundle file {config_name} nests too deeply; refusing it.") from None
    wanted = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    if wanted != stored:
        diff = sorted(k for k in set(wanted) | set(stored) if wanted.get(k) != stored.get(k))[:4]
        raise UnsafeBundleError(
            f"{config_name} describes a tower whose weights are not the ones {weights_name} holds ("
            + ", ".join(f"{k}: config {wanted.get(k)}, file {stored.get(k)}" for k in diff)
            + "); refusing the bundle before building it.")
    module = tower_from_config(config)
    try:
        module.load_state_dict(_read_state(weights, weights_name), strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"{weights_name} does not fit the tower described in {config_name}: {exc}") from exc
    return module.eval()

