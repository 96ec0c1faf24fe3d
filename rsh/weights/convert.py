"""PyTorch state dicts <-> Flax variable trees, and the converted-weights cache.

Each model names its Flax modules so that a small function
`torch_prefix(flax_module_path)` gives the PyTorch module name; the leaves then
follow one rule:

  params/.../kernel  [kh, kw, in/groups, out] <- weight [out, in/groups, kh, kw]
  params/.../kernel  [in, out]                <- weight [out, in]   (Linear)
  params/.../scale                            <- weight             (BatchNorm)
  params/.../bias                             <- bias
  batch_stats/.../mean, var                   <- running_mean, running_var

Depthwise convolutions need no special case: PyTorch's grouped weight
[c, 1, kh, kw] transposes to Flax's `feature_group_count=c` kernel [kh, kw, 1, c].

A converted file is cached as `.npz` under `<cache>/weights/`, named by the
architecture and the content hash of the `.pth`.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import tempfile
import zipfile
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from rsh import distributed
from rsh.weights import torch_pickle
from rsh.weights.torch_pickle import StateDict

Variables = dict[str, Any]

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


def leaves(tree: Mapping, path: tuple[str, ...] = ()) -> Iterable[tuple[tuple[str, ...], Any]]:
  """(path, leaf) of each leaf of a nested mapping, depth first, in its order."""
  for k, v in tree.items():
    if isinstance(v, Mapping):
      yield from leaves(v, path + (k,))
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
    state_dict: name -> array, as from `torch_pickle.load_torch_state_dict`.
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
  for path, ref in leaves({c: shapes[c] for c in ordered}):
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
  for path, value in leaves(variables):
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
  save_npz_atomic(path, {"/".join(p): np.asarray(v) for p, v in leaves(variables)})


def save_npz_atomic(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
  """`np.savez(path, **arrays)` through a temporary file in the same directory,
  renamed into place: a reader never sees a half-written file. In a multi-host
  run only the writer (process 0) writes: the others use what they made in memory."""
  if not distributed.is_writer():
    return
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez(f, **arrays)
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
  variables = convert(torch_pickle.load_torch_state_dict(source))
  save_variables(target, variables)
  return variables
