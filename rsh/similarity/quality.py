"""How good an SSM is: accuracy and IoU against the labels (eq. 5.16, 5.17)."""

from __future__ import annotations

import numpy as np

__all__ = ["ssm_quality"]


def ssm_quality(packed, labels, *, block: int = 4096) -> dict[str, float]:
  """Accuracy and IoU of an SSM against the labels (eq. 5.16, 5.17).

  GT[i, j] = +1 when labels[i] == labels[j]. Both metrics run over all n^2
  entries, diagonal included, as eq. 5.16 sums over every (i, j) and divides
  by N^2. Memory: the packed rows of `block` images and one packed row per class.

  Args:
    packed: uint8[n, ceil(n / 8)] from `two_stage_knn`.
    labels: int[n] class of each row.

  Returns:
    {"accuracy": fraction of entries where S == GT,
     "iou": |{S=1} & {GT=1}| / |{S=1} | {GT=1}|}.
  """
  packed = np.asarray(packed, np.uint8)
  labels = np.asarray(labels)
  if labels.ndim != 1 or packed.ndim != 2 or len(labels) != len(packed):
    raise ValueError(f"labels must be [n] with n = {len(packed)} (the rows of packed), "
                     f"got shape {labels.shape}")
  n = len(labels)
  if packed.shape[1] != (n + 7) // 8:
    raise ValueError(f"packed must be uint8[{n}, {(n + 7) // 8}], got shape {packed.shape}")
  _, cls = np.unique(labels, return_inverse=True)
  cls = cls.ravel()
  per_class = np.bincount(cls)
  class_rows = np.stack([np.packbits(cls == c) for c in range(len(per_class))])
  valid = np.packbits(np.ones(n, bool))                     # zero where bits pad
  both = predicted = 0
  for start in range(0, n, block):
    rows = packed[start:start + block] & valid
    predicted += int(np.bitwise_count(rows).sum(dtype=np.int64))
    both += int(np.bitwise_count(rows & class_rows[cls[start:start + block]]).sum(dtype=np.int64))
  truth = int((per_class.astype(np.int64) ** 2).sum())
  union = predicted + truth - both
  return {"accuracy": 1.0 - (union - both) / float(n) ** 2,
          "iou": both / union}
