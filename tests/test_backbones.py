"""Backbones and the PyTorch weight reader.

Fast tests run without PyTorch: the reader on the real packaged file and on
files written here in both PyTorch layouts, the Flax models' shapes, and
Inception-v3 / ResNet-50 round trips (random Flax variables -> torchvision-style
state dict -> `.pth` -> loader -> the same outputs). The slow test compares the
Flax EfficientNet-Lite0 with a PyTorch reference on the packaged weights.
"""

import collections
import io
import math
import pickle
import sys
import types
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsh import weights as rweights
from rsh.models import efficientnet
from rsh.models import inception
from rsh.models import resnet
from rsh.weights import convert
from rsh.weights import torch_pickle

# ----------------------------------------------------------------------------
# Writing PyTorch files without PyTorch. The pickle must name `torch._utils.
# _rebuild_tensor_v2` and `torch.FloatStorage`; pickle only writes references
# to importable objects, so stand-ins live in a fake module whose name is
# swapped for "torch" in the protocol-2 bytes (GLOBAL opcodes are plain text).

_FAKE = "rshfaketorch"


def _fake_torch():
  if _FAKE not in sys.modules:
    root, utils = types.ModuleType(_FAKE), types.ModuleType(_FAKE + "._utils")

    def _rebuild_tensor_v2(*args):
      raise AssertionError("never called: only pickled by reference")

    _rebuild_tensor_v2.__module__ = utils.__name__
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in ("FloatStorage", "LongStorage", "HalfStorage", "IntStorage"):
      setattr(root, name, type(name, (), {"__module__": _FAKE}))
    sys.modules[root.__name__], sys.modules[utils.__name__] = root, utils
  return sys.modules[_FAKE], sys.modules[_FAKE + "._utils"]


_STORAGE_NAMES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.int64): "LongStorage",
                  np.dtype(np.float16): "HalfStorage", np.dtype(np.int32): "IntStorage"}


class _Storage:
  def __init__(self, key, flat):
    self.key, self.flat = key, flat


class _Tensor:
  def __init__(self, storage, offset, shape, strides):
    self.args = (storage, offset, tuple(shape), tuple(strides))

  def __reduce__(self):
    _, utils = _fake_torch()
    return utils._rebuild_tensor_v2, self.args + (False, collections.OrderedDict())


def _little_endian_bytes(a):
  return a.astype(a.dtype.newbyteorder("<")).tobytes()


def write_torch_file(path, tensors, *, legacy=False):
  """Writes name -> array (or name -> (flat storage array, offset, shape, strides)
  for views) as `torch.save` would, in the zip or the legacy layout."""
  root, _ = _fake_torch()
  storages, state = {}, collections.OrderedDict()
  for name, t in tensors.items():
    if isinstance(t, tuple):
      flat, offset, shape, strides = t
    else:
      flat, offset, shape = np.ascontiguousarray(t).reshape(-1), 0, np.shape(t)
      strides = tuple(int(np.prod(shape[i + 1:])) for i in range(len(shape)))
    key = next((k for k, s in storages.items() if s.flat is flat), str(len(storages)))
    storages.setdefault(key, _Storage(key, flat))
    state[name] = _Tensor(storages[key], offset, shape, strides)

  class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
      if not isinstance(obj, _Storage):
        return None
      cls = getattr(root, _STORAGE_NAMES[obj.flat.dtype])
      pid = ("storage", cls, obj.key, "cpu", obj.flat.size)
      return pid + (None,) if legacy else pid

  def dumps(obj):
    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"c" + _FAKE.encode(), b"ctorch")

  if legacy:
    with open(path, "wb") as f:
      for header in (torch_pickle.LEGACY_MAGIC, 1001,
                     {"protocol_version": 1001, "little_endian": True,
                      "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        pickle.dump(header, f, protocol=2)
      f.write(dumps(state))
      pickle.dump(list(storages), f, protocol=2)
      for s in storages.values():
        f.write(np.int64(s.flat.size).astype("<i8").tobytes())
        f.write(_little_endian_bytes(s.flat))
  else:
    with zipfile.ZipFile(path, "w") as zf:
      zf.writestr("archive/data.pkl", dumps(state))
      zf.writestr("archive/byteorder", "little")
      for s in storages.values():
        zf.writestr(f"archive/data/{s.key}", _little_endian_bytes(s.flat))
      zf.writestr("archive/version", "3\n")


def _example_tensors():
  rng = np.random.default_rng(0)
  shared = rng.normal(size=40).astype(np.float32)
  return {
      "conv.weight": rng.normal(size=(4, 3, 2, 2)).astype(np.float32),
      # A transposed view (strides not in logical order) and an offset view
      # sharing one storage, as in checkpoints converted from TensorFlow.
      "transposed": (shared, 0, (4, 5), (1, 4)),
      "offset": (shared, 20, (2, 3), (3, 1)),
      "bn.num_batches_tracked": np.array(7, np.int64),
      "half": rng.normal(size=(3,)).astype(np.float16),
      "ints": np.arange(5, dtype=np.int32),
  }


def _expected(t):
  if not isinstance(t, tuple):
    return t
  flat, offset, shape, strides = t
  return np.lib.stride_tricks.as_strided(
      flat[offset:], shape, [s * flat.itemsize for s in strides]).copy()


# ----------------------------------------------------------------------------
# The reader.


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_reader_on_handwritten_files(tmp_path, legacy):
  tensors = _example_tensors()
  path = tmp_path / "t.pth"
  write_torch_file(path, tensors, legacy=legacy)
  sd = torch_pickle.load_torch_state_dict(path)
  assert list(sd) == list(tensors)
  for name, t in tensors.items():
    want = _expected(t)
    assert sd[name].dtype == want.dtype and sd[name].shape == want.shape, name
    np.testing.assert_array_equal(sd[name], want)
    assert sd[name].flags.c_contiguous


def test_reader_on_packaged_efficientnet_file():
  sd = torch_pickle.load_torch_state_dict(rweights.efficientnet_lite0_file())
  assert len(sd) == 296  # 49 BatchNorms x 6 entries + classifier weight and bias
  assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3)
  assert sd["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
  assert sd["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
  assert sd["_conv_head.weight"].shape == (1280, 320, 1, 1)
  assert sd["_fc.weight"].shape == (1000, 1280) and sd["_fc.bias"].shape == (1000,)
  assert sd["_bn1.running_var"].min() > 0
  assert sd["_bn0.num_batches_tracked"].dtype == np.int64
  assert all(v.dtype == np.float32 for k, v in sd.items() if "num_batches" not in k)


def test_reader_refuses_arbitrary_globals(tmp_path):
  path = tmp_path / "evil.pth"
  with zipfile.ZipFile(path, "w") as zf:
    zf.writestr("archive/data.pkl", b"cos\nsystem\n(S'true'\ntR.")
  with pytest.raises(pickle.UnpicklingError, match="os.system"):
    torch_pickle.load_torch_state_dict(path)


def test_variables_npz_round_trip(tmp_path):
  variables = {"params": {"a": {"kernel": np.ones((2, 3), np.float32)}},
               "batch_stats": {"a": {"mean": np.zeros(3, np.float32)}}}
  path = tmp_path / "w" / "v.npz"
  convert.save_variables(path, variables)
  back = convert.load_variables(path)
  np.testing.assert_array_equal(back["params"]["a"]["kernel"], variables["params"]["a"]["kernel"])
  np.testing.assert_array_equal(back["batch_stats"]["a"]["mean"], np.zeros(3))
  assert [p.name for p in path.parent.iterdir()] == ["v.npz"]  # no temporary left


# ----------------------------------------------------------------------------
# EfficientNet-Lite0.


def test_efficientnet_pretrained_and_cache(tmp_path, monkeypatch):
  variables = rweights.load_pretrained("efficientnet_lite0", cache_dir=tmp_path)
  cached = list((tmp_path / "weights").glob("efficientnet_lite0-*.npz"))
  assert len(cached) == 1
  model = efficientnet.EfficientNetLite0()
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 224, 224, 3))
  logits = jax.jit(model.apply)(variables, x)
  feats = jax.jit(lambda v, x: model.apply(v, x, method=model.features))(variables, x)
  assert logits.shape == (2, 1000) and feats.shape == (2, 1280)
  assert np.isfinite(logits).all() and (np.asarray(feats) >= 0).all()  # after ReLU6
  # The second load reads the .npz: the .pth is not parsed again.
  monkeypatch.setattr(torch_pickle, "load_torch_state_dict",
                      lambda *_: pytest.fail("converted weights were not cached"))
  again = rweights.load_pretrained("efficientnet_lite0", cache_dir=tmp_path)
  np.testing.assert_array_equal(
      jax.tree_util.tree_leaves(again)[0], jax.tree_util.tree_leaves(variables)[0])
  assert jax.tree_util.tree_structure(again) == jax.tree_util.tree_structure(variables)


@pytest.mark.parametrize("size,kernel,stride", [(9, 3, 2), (8, 5, 1)])
def test_depthwise_shift_equals_grouped_conv(size, kernel, stride):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, size, size + 1, 6)).astype(np.float32)
  variables = {"params": {"kernel": rng.normal(size=(kernel, kernel, 1, 6)).astype(np.float32)}}
  got = jax.jit(efficientnet.DepthwiseConv(kernel, stride, impl="shift").apply)(variables, x)
  want = jax.jit(efficientnet.DepthwiseConv(kernel, stride, impl="conv").apply)(variables, x)
  ref = jax.lax.conv_general_dilated(
      x, variables["params"]["kernel"], (stride, stride), "SAME",
      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=6)
  np.testing.assert_allclose(got, want, atol=1e-5)
  np.testing.assert_allclose(want, ref, atol=1e-6)


def test_efficientnet_torch_mapping_is_invertible():
  sd = torch_pickle.load_torch_state_dict(rweights.efficientnet_lite0_file())
  back = rweights.to_torch_state_dict("efficientnet_lite0",
                                    rweights.from_torch_state_dict("efficientnet_lite0", sd))
  assert set(back) == set(sd)
  for k in sd:
    np.testing.assert_array_equal(back[k], sd[k])


# ----------------------------------------------------------------------------
# Inception-v3 and ResNet-50 with random weights: torchvision layout round trip.


def _random_variables(model, x, seed):
  """Random variables of `model`'s shapes, drawn in numpy: `jax.jit(model.init)`
  would spend ~10 s compiling initialisers. BatchNorm statistics are random too,
  so a mean / variance mix-up cannot hide behind init's 0 / 1."""
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = path[-1].key
    if name == "kernel":  # variance-preserving, so activations stay finite
      return (rng.normal(size=leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))).astype(np.float32)
    if name in ("scale", "var"):
      return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
    return rng.normal(0, 0.1, leaf.shape).astype(np.float32)  # bias, mean

  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.mark.parametrize("arch,size,legacy", [
    (resnet, 64, False),
    (inception, 75, True),   # the smallest input Inception's grid reductions allow
], ids=["resnet50", "inception_v3"])
def test_torchvision_round_trip(tmp_path, arch, size, legacy):
  model = arch.ResNet50() if arch is resnet else arch.InceptionV3()
  x = jax.random.uniform(jax.random.PRNGKey(0), (1, size, size, 3))
  variables = _random_variables(model, x, seed=1)
  sd = rweights.to_torch_state_dict(arch.NAME, variables)
  # torchvision's names and layouts, e.g. OIHW convolution weights.
  if arch is resnet:
    assert sd["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert sd["layer4.2.bn3.running_var"].shape == (2048,)
    assert len(sd) == 320
  else:
    assert sd["Mixed_7c.branch3x3dbl_3b.conv.weight"].shape == (384, 384, 3, 1)
    assert sd["Conv2d_1a_3x3.bn.num_batches_tracked"].dtype == np.int64
    assert len(sd) == 580 - 14  # torchvision's 580 less the 14 AuxLogits entries
    rng = np.random.default_rng(0)  # the file may hold AuxLogits; they are skipped
    sd["AuxLogits.fc.weight"] = rng.normal(size=(1000, 768)).astype(np.float32)
  assert sd["fc.weight"].shape == (1000, 2048)
  path = tmp_path / f"{arch.NAME}.pth"
  write_torch_file(path, sd, legacy=legacy)
  loaded = rweights.load_pretrained(arch.NAME, path, cache_dir=tmp_path / "cache")
  forward = jax.jit(lambda v, x: (model.apply(v, x), model.apply(v, x, method=model.features)))
  (logits, feats), (logits2, feats2) = forward(variables, x), forward(loaded, x)
  assert logits.shape == (1, 1000) and feats.shape == (1, arch.FEATURE_DIM) == (1, 2048)
  np.testing.assert_array_equal(logits2, logits)
  np.testing.assert_array_equal(feats2, feats)


def test_missing_or_wrong_weights_say_what_to_supply(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"--config.data.weights=.*inception_v3_google"):
    rweights.load_pretrained("inception_v3", None)
  with pytest.raises(FileNotFoundError, match=r"not found at .*nope.pth.*resnet50-"):
    rweights.load_pretrained("resnet50", tmp_path / "nope.pth")
  with pytest.raises(ValueError, match=r"Keras.*only torchvision state dicts"):
    rweights.load_pretrained("resnet50", tmp_path / "resnet50_weights.h5")
  with pytest.raises(FileNotFoundError, match="efficientnet-lite0"):
    rweights.load_pretrained("efficientnet_lite0", tmp_path / "missing.pth")
  # Another architecture's state dict fails loudly, naming keys.
  with pytest.raises(ValueError,
                     match=r"does not match torchvision ResNet-50:\n  missing: .*conv1.weight"):
    rweights.load_pretrained("resnet50", rweights.efficientnet_lite0_file(), cache_dir=tmp_path)


# ----------------------------------------------------------------------------
# Against PyTorch (slow; needs torch, the optional `torch` extra).


def _torch_lite0():
  """A minimal PyTorch EfficientNet-Lite0 with the packaged state dict's names.

  Written for this test: TF-"SAME" padding computed per input, BatchNorm eps 1e-3,
  ReLU6, no squeeze-excitation, residual when stride 1 and widths match.
  """
  import torch
  from torch import nn
  import torch.nn.functional as F

  class SameConv(nn.Conv2d):
    def forward(self, x):
      (kh, kw), (s, _) = self.kernel_size, self.stride
      ih, iw = x.shape[-2:]
      ph = max((math.ceil(ih / s) - 1) * s + kh - ih, 0)
      pw = max((math.ceil(iw / s) - 1) * s + kw - iw, 0)
      return super().forward(F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2]))

  class Block(nn.Module):
    def __init__(self, c_in, c_out, k, s, e):
      super().__init__()
      w = c_in * e
      self.expand, self.skip = e != 1, s == 1 and c_in == c_out
      if self.expand:
        self._expand_conv = SameConv(c_in, w, 1, bias=False)
        self._bn0 = nn.BatchNorm2d(w, eps=1e-3)
      self._depthwise_conv = SameConv(w, w, k, s, groups=w, bias=False)
      self._bn1 = nn.BatchNorm2d(w, eps=1e-3)
      self._project_conv = SameConv(w, c_out, 1, bias=False)
      self._bn2 = nn.BatchNorm2d(c_out, eps=1e-3)

    def forward(self, x):
      y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
      y = F.relu6(self._bn1(self._depthwise_conv(y)))
      y = self._bn2(self._project_conv(y))
      return y + x if self.skip else y

  class Lite0(nn.Module):
    def __init__(self):
      super().__init__()
      self._conv_stem = SameConv(3, 32, 3, 2, bias=False)
      self._bn0 = nn.BatchNorm2d(32, eps=1e-3)
      blocks, c_in = [], 32
      for repeats, k, s, e, c_out in efficientnet.STAGES:
        for r in range(repeats):
          blocks.append(Block(c_in, c_out, k, s if r == 0 else 1, e))
          c_in = c_out
      self._blocks = nn.ModuleList(blocks)
      self._conv_head = SameConv(320, 1280, 1, bias=False)
      self._bn1 = nn.BatchNorm2d(1280, eps=1e-3)
      self._fc = nn.Linear(1280, 1000)

    def forward(self, x):
      x = F.relu6(self._bn0(self._conv_stem(x)))
      for block in self._blocks:
        x = block(x)
      x = F.relu6(self._bn1(self._conv_head(x)))
      return self._fc(x.mean((2, 3)))

  model = Lite0().eval()
  model.load_state_dict(torch.load(rweights.efficientnet_lite0_file(), weights_only=True))
  return model


def _test_inputs():
  """f32[4, 224, 224, 3] in [0, 1]: noise, a gradient, a checkerboard, a flat grey."""
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[0:224, 0:224] / 223.0
  return np.stack([
      rng.uniform(0, 1, (224, 224, 3)),
      np.stack([yy, xx, (yy + xx) / 2], -1),
      np.repeat((((np.arange(224)[:, None] // 16) + (np.arange(224) // 16)) % 2)[..., None],
                3, -1) * 0.8 + 0.1,
      np.full((224, 224, 3), 0.45),
  ]).astype(np.float32)


@pytest.mark.slow
def test_efficientnet_matches_pytorch(tmp_path):
  torch = pytest.importorskip("torch")
  x = (_test_inputs() - np.float32(efficientnet.MEAN)) / np.float32(efficientnet.STD)
  with torch.no_grad():
    want = _torch_lite0()(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
  model = efficientnet.EfficientNetLite0()
  variables = rweights.load_pretrained("efficientnet_lite0", cache_dir=tmp_path)
  got = np.asarray(jax.jit(model.apply)(variables, jnp.asarray(x)))
  print(f"max |logits flax - torch| = {np.abs(got - want).max():.2e}")
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
  np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1))
  conv = efficientnet.EfficientNetLite0(depthwise_impl="conv")
  np.testing.assert_allclose(np.asarray(jax.jit(conv.apply)(variables, x)), want, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_reader_agrees_with_torch(tmp_path, legacy):
  torch = pytest.importorskip("torch")
  state = {"w": torch.arange(24.0).reshape(2, 3, 4).permute(2, 0, 1),
           "p": torch.nn.Parameter(torch.randn(3, 5)),
           "v": torch.arange(10, dtype=torch.int32)[2:7],
           "bf": torch.randn(3).bfloat16(), "n": torch.tensor(3)}
  torch.save(state, tmp_path / "a.pth", _use_new_zipfile_serialization=not legacy)
  sd = torch_pickle.load_torch_state_dict(tmp_path / "a.pth")
  for k, v in state.items():
    np.testing.assert_array_equal(sd[k].astype(np.float64), v.detach().double().numpy())
  # And torch reads what this test's writer produces.
  tensors = _example_tensors()
  write_torch_file(tmp_path / "b.pth", tensors, legacy=legacy)
  back = torch.load(tmp_path / "b.pth", weights_only=True)
  for k, t in tensors.items():
    np.testing.assert_array_equal(back[k].numpy(), _expected(t))
