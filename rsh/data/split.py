"""The query / archive / training split, and the training batches drawn from it.

Everything here is a pure function of its arguments (seeds included), so a
training run resumed at step s sees exactly the batches an uninterrupted run
would have seen from step s on.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import numpy as np

from rsh.data.bands import DataError

# Table 5.3 of the UAHM protocol on EuroSAT: per class 100 queries, and 500
# training images drawn from the archive (the rest of the class).
PAPER_N_QUERY = 100
PAPER_N_TRAIN = 500


class Split(NamedTuple):
  """Index arrays into a dataset, each int64[k] in a seeded random order.

  `query` and `archive` partition the dataset; `train` is a subset of `archive`.
  The order is never by class: rankings break distance ties by archive
  position, so an archive in class blocks would favour the classes stored
  first (and datasets are usually stored by class).
  """
  query: np.ndarray
  archive: np.ndarray
  train: np.ndarray


def _seed(seed, what="seed") -> int:
  try:
    s = int(seed)
  except (TypeError, ValueError):
    raise DataError(f"{what} must be an integer, not {seed!r}") from None
  if s < 0:
    raise DataError(f"{what} must be >= 0, not {seed}")
  return s


def paper_split(labels: np.ndarray, n_query: int, n_train: int | None, seed: int, *,
                class_names: Sequence[str] | None = None) -> Split:
  """Per class: `n_query` random queries, the rest archive, `n_train` of it to train on.

  Args:
    labels: int[n] class of each image.
    n_query: queries per class (0 allowed).
    n_train: training images per class, drawn from that class's archive; None =
      the whole archive.
    seed: the split is a pure function of (labels, n_query, n_train, seed); each
      class draws from its own stream, so one class's size moves no other's split.
    class_names: only to name a class in error messages.

  Returns:
    `Split` of int64 index arrays, each a seeded permutation (not sorted, not
    in class blocks); with `n_train=None`, `train` is `archive` itself.
  """
  labels = np.asarray(labels)
  if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
    raise DataError(f"labels must be int[n], not {labels.dtype}{list(labels.shape)}")
  seed = _seed(seed)
  n_query = int(n_query)
  if n_query < 0:
    raise DataError(f"n_query must be >= 0, not {n_query}")
  if n_train is not None:
    n_train = int(n_train)
    if n_train < 1:
      raise DataError(f"n_train must be >= 1 or None (the whole archive), not {n_train}")
  query, archive, train = [], [], []
  for c in np.unique(labels):
    idx = np.flatnonzero(labels == c)
    name = (f"class {class_names[c]!r}" if class_names is not None and 0 <= c < len(class_names)
            else f"class {c}")
    need = n_query + (n_train or 1)  # the archive must not be empty
    if need > len(idx):
      raise DataError(f"{name} has {len(idx)} images, too few for n_query={n_query} "
                      f"+ n_train={n_train if n_train is not None else 'all (>= 1)'}")
    perm = np.random.default_rng((seed, int(c))).permutation(idx)
    query.append(perm[:n_query])
    archive.append(perm[n_query:])
    # The archive part of the permutation is itself in random order, so its
    # head is a uniformly random subset of the archive.
    train.append(perm[n_query:] if n_train is None else perm[n_query:n_query + n_train])
  def shuffled(parts, stream):
    # Streams 2**32 + i never meet a class's stream (seed, c).
    flat = np.sort(np.concatenate(parts or [np.empty(0, np.int64)])).astype(np.int64)
    return np.random.default_rng((seed, 2**32 + stream)).permutation(flat)

  archive = shuffled(archive, 1)
  return Split(shuffled(query, 0), archive,
               archive if n_train is None else shuffled(train, 2))


def random_split(n: int, n_query: int, n_train: int | None, seed: int) -> Split:
  """`n_query` random queries in all, the rest archive, `n_train` of it to train on.

  For multi-label data, where a per-class split is not defined. The same
  conventions as `paper_split`: seeded permutations, `train` is `archive` when
  `n_train` is None.
  """
  seed, n, n_query = _seed(seed), int(n), int(n_query)
  if n_query < 0:
    raise DataError(f"n_query must be >= 0, not {n_query}")
  if n_query >= n:
    raise DataError(f"n_query={n_query} leaves no archive among {n} images")
  if n_train is not None and not 1 <= int(n_train) <= n - n_query:
    raise DataError(f"n_train must be in 1..{n - n_query} (the archive) or None, not {n_train}")
  perm = np.random.default_rng((seed, 2**33)).permutation(n).astype(np.int64)
  query, archive = perm[:n_query], perm[n_query:]
  return Split(query, archive, archive if n_train is None else archive[:int(n_train)])


@functools.lru_cache(maxsize=8)
def _epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
  perm = np.random.default_rng((seed, epoch)).permutation(n)
  perm.flags.writeable = False  # shared by every batch of the epoch
  return perm


def _check(indices, batch_size, process_index, process_count):
  indices = np.asarray(indices)
  if indices.ndim != 1:
    raise DataError(f"indices must be a 1-d index array, not shape {list(indices.shape)}")
  batch_size, process_index, process_count = int(batch_size), int(process_index), int(
      process_count)
  if batch_size < 1:
    raise DataError(f"batch_size must be >= 1, not {batch_size}")
  if batch_size > len(indices):
    raise DataError(f"batch_size={batch_size} is larger than the set it is drawn from "
                    f"({len(indices)} images)")
  if process_count < 1 or not 0 <= process_index < process_count:
    raise DataError(f"process_index={process_index} must lie in [0, process_count="
                    f"{process_count})")
  if batch_size % process_count:
    raise DataError(f"the global batch_size={batch_size} must divide by process_count="
                    f"{process_count}")
  return indices, batch_size, process_index, process_count


def steps_per_epoch(n: int, batch_size: int) -> int:
  """Full batches per pass over `n` items (the remainder is dropped)."""
  return int(n) // int(batch_size)


def batch_at(indices: np.ndarray, batch_size: int, seed: int, step: int, *,
             process_index: int = 0, process_count: int = 1) -> np.ndarray:
  """The batch of global training step `step`: a pure function of its arguments.

  Step s falls in epoch `s // steps_per_epoch`; each epoch is a fresh
  permutation of `indices` seeded by (seed, epoch), cut into full batches of
  `batch_size` (the last partial batch is dropped).

  Args:
    indices: int[n], the set to draw from (e.g. `Split.train`).
    batch_size: the global batch size, divisible by `process_count`.
    seed, step: non-negative ints.
    process_index, process_count: this host's contiguous share of the global batch.

  Returns:
    int[batch_size // process_count], elements of `indices` (dtype kept).
  """
  indices, batch_size, process_index, process_count = _check(
      indices, batch_size, process_index, process_count)
  step = _seed(step, "step")
  epoch, pos = divmod(step, steps_per_epoch(len(indices), batch_size))
  order = _epoch_order(len(indices), _seed(seed), epoch)
  per_process = batch_size // process_count
  start = pos * batch_size + process_index * per_process
  return indices[order[start:start + per_process]]

