"""Training-batch samplers (`config.train.sampler`): which training rows make a step's batch.

Each sampler is a pure function of (labels, batch_size, seed, step, options),
so a run resumed at step s sees exactly the batches an uninterrupted run would
have seen. A batch is int64 positions 0..n_train-1 into the training rows
(`Split.train`); `labels` are those rows' labels: int[n] class ids, or
multi-hot [n, classes], where an image "is of" class c when it carries label c.

  uniform   — `batch_at`: epochs of seeded permutations (the default; bitwise
              today's batches);
  two_class — n distinct images of one class a, then m = batch_size - n of a
              class b != a (MiLAN's batch; the thesis's 64 + 32); with
              multi-hot labels b's images do not carry a;
  pk        — P classes x K images (online triplet mining): P distinct classes,
              then K images of each, P*K distinct images in all;
  domains   — n rows of the added domain (id 1, e.g. `config.data.domain`'s
              source rows) then batch_size - n of the main data (id 0), each
              part `batch_at` epochs of its own rows (labels are not read).

`sampler(name, labels, batch_size, seed, options)` checks everything once and
returns `batch(step)`; a mistake is a `DataError` (a `ValueError`) naming the
config key. Each step draws from `np.random.default_rng((seed, step, stream))`
with the sampler's own stream: no global state.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from rsh.data.bands import DataError
from rsh.data.split import batch_at

# Each sampler's options (`config.train.sampler_options.<key>`; None = not given).
SAMPLERS: dict[str, tuple[str, ...]] = {"uniform": (), "two_class": ("n",), "pk": ("k",),
                                        "domains": ("n",)}
PK_DEFAULT_K = 4
# Third entries of the step seeds, unlike any other stream of rsh.data.
_STREAMS = {"two_class": 0x5A3D_0001, "pk": 0x5A3D_0002, "domains": 0x5A3D_0003}
_NAME, _OPTS, _BATCH = "config.train.sampler", "config.train.sampler_options", \
    "config.train.batch_size"

BatchFn = Callable[[int], np.ndarray]


def _int(value, key: str, low: int) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
    raise DataError(f"{key} must be an integer >= {low}, not {value!r}")
  return int(value)


def _options(name: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
  """The options given (not None) to sampler `name`, refusing any not its own."""
  given = {} if options is None else {k: options[k] for k in options.keys()}
  given = {k: v for k, v in given.items() if v is not None}
  for key in given:
    if key not in SAMPLERS[name]:
      own = ", ".join(SAMPLERS[name]) or "none"
      raise DataError(f"{_OPTS}.{key} is not an option of {_NAME}={name!r} (its options: "
                      f"{own})")
  return given


def _membership(labels) -> np.ndarray:
  """bool[n, classes]: whether row i is of class j (int labels: j-th distinct id)."""
  labels = np.asarray(labels)
  if labels.ndim == 1 and (labels.size == 0 or np.issubdtype(labels.dtype, np.integer)):
    return labels[:, None] == np.unique(labels)[None, :]
  if labels.ndim == 2 and (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool) \
      and np.isin(labels, (0, 1)).all():
    return labels.astype(bool)
  raise DataError(f"the training labels must be int[n] class ids or multi-hot 0/1 "
                  f"[n, classes], not {labels.dtype}{list(labels.shape)}")


def _largest(sizes: np.ndarray) -> str:
  top = np.sort(sizes)[::-1][:5]
  return f"the largest classes have {', '.join(map(str, top))} images ({len(sizes)} classes)"


def _uniform(labels, batch_size: int, seed: int) -> BatchFn:
  n = len(labels)
  if batch_size > n:
    raise DataError(f"{_BATCH}={batch_size} is larger than the training set ({n} images)")
  positions = np.arange(n)
  return lambda step: batch_at(positions, batch_size, seed, step)


def _two_class(labels, batch_size: int, seed: int, n: int | None = None) -> BatchFn:
  if batch_size < 2:
    raise DataError(f"{_NAME}='two_class' needs {_BATCH} >= 2 (n images of one class + "
                    f"m of another), not {batch_size}")
  n = min(max(round(2 * batch_size / 3), 1), batch_size - 1) if n is None else n
  if not 1 <= n < batch_size:
    raise DataError(f"{_OPTS}.n={n} must lie in 1..{batch_size - 1} ({_BATCH}={batch_size} "
                    f"holds n images of one class + m = {_BATCH} - n >= 1 of another)")
  m = batch_size - n
  member = _membership(labels)
  sizes = member.sum(0)
  co = member.T.astype(np.float64) @ member.astype(np.float64)
  # seconds[a, b]: b may follow a (b's images that do not carry a are >= m).
  seconds = (sizes[None, :] - np.rint(co).astype(np.int64)) >= m
  np.fill_diagonal(seconds, False)
  firsts = np.flatnonzero((sizes >= n) & seconds.any(1))
  if not len(firsts):
    fix = [f"lower {_OPTS}.n"] * int(not (sizes >= n).any())
    fix += [f"lower {_BATCH} (m = {_BATCH} - n)"] * int((sizes >= m).sum() < 2)
    fix = " and ".join(fix) or f"lower {_BATCH} or {_OPTS}.n"
    other = " not carrying the first's label" if np.ndim(labels) == 2 else ""
    raise DataError(f"{_NAME}='two_class' needs a class with >= n={n} training images and "
                    f"another with >= m={m}{other}; {_largest(sizes)}: {fix}")
  pools = [np.flatnonzero(member[:, c]) for c in range(member.shape[1])]

  def batch(step: int) -> np.ndarray:
    rng = np.random.default_rng((seed, _int(step, "step", 0), _STREAMS["two_class"]))
    a = rng.choice(firsts)
    b = rng.choice(np.flatnonzero(seconds[a]))
    of_b = pools[b][~member[pools[b], a]]
    return np.concatenate([rng.choice(pools[a], n, replace=False),
                           rng.choice(of_b, m, replace=False)]).astype(np.int64)
  return batch


def _pk(labels, batch_size: int, seed: int, k: int | None = None) -> BatchFn:
  k = PK_DEFAULT_K if k is None else k
  if k > batch_size or batch_size % k:
    raise DataError(f"{_OPTS}.k={k} must divide {_BATCH}={batch_size} (P = batch_size // k "
                    f"classes of k images each)")
  p = batch_size // k
  member = _membership(labels)
  sizes = member.sum(0)
  if (sizes >= k).sum() < p:
    raise DataError(f"{_NAME}='pk' needs P={p} classes ({_BATCH} // k) with >= k={k} "
                    f"training images; {(sizes >= k).sum()} have, {_largest(sizes)}: lower "
                    f"{_BATCH}, or set {_OPTS}.k so that batch_size // k classes have k "
                    f"images")
  # A class never runs out of images not drawn for the others when it has k
  # images of its own label alone, or P*k images; P such classes guarantee every batch.
  alone = (member & (member.sum(1, keepdims=True) == 1)).sum(0)
  if ((alone >= k) | (sizes >= p * k)).sum() < p:
    raise DataError(f"{_NAME}='pk' cannot always draw P*k={p * k} distinct images: the images "
                    f"carry several labels, and fewer than P={p} classes have k={k} images of "
                    f"their label alone or P*k images; {_largest(sizes)}: lower {_BATCH} "
                    f"or {_OPTS}.k")
  pools = [np.flatnonzero(member[:, c]) for c in range(member.shape[1])]

  def batch(step: int) -> np.ndarray:
    rng = np.random.default_rng((seed, _int(step, "step", 0), _STREAMS["pk"]))
    taken, chosen = np.zeros(0, np.int64), np.zeros(len(pools), bool)
    for _ in range(p):
      left = sizes - member[taken].sum(0)  # each class's images not yet in the batch
      c = rng.choice(np.flatnonzero(~chosen & (left >= k)))
      chosen[c] = True
      pool = pools[c][~np.isin(pools[c], taken)]
      taken = np.concatenate([taken, rng.choice(pool, k, replace=False)])
    return taken
  return batch


def _domains(labels, batch_size: int, seed: int, n: int | None = None, *,
             domains=None) -> BatchFn:
  ids = np.zeros(len(labels), np.int32) if domains is None else np.asarray(domains)
  sizes = np.bincount(ids, minlength=2)
  if len(sizes) != 2 or not sizes.all():
    raise DataError(f"{_NAME}='domains' needs training rows of two domains, the main data's "
                    f"(id 0) and an added one's (id 1, config.data.domain); the training set "
                    f"has {dict(enumerate(sizes.tolist()))} rows per domain id")
  n = batch_size // 2 if n is None else n
  if not 1 <= n < batch_size:
    raise DataError(f"{_OPTS}.n={n} must lie in 1..{batch_size - 1} ({_BATCH}={batch_size} "
                    f"holds n rows of the added domain + the rest of the main data's)")
  parts = [(np.flatnonzero(ids == 1), n), (np.flatnonzero(ids == 0), batch_size - n)]
  for rows, k in parts:
    if k > len(rows):
      raise DataError(f"{_NAME}='domains': {k} rows a batch from a domain of {len(rows)} "
                      f"training rows; lower {_BATCH} or {_OPTS}.n")
  seeds = [int(np.random.SeedSequence((seed, _STREAMS["domains"], i)).generate_state(1)[0])
           for i in range(2)]   # each part's epochs its own permutations
  return lambda step: np.concatenate([batch_at(rows, k, part_seed, step)
                                      for (rows, k), part_seed in zip(parts, seeds)])


_BUILD = {"uniform": _uniform, "two_class": _two_class, "pk": _pk, "domains": _domains}


def sampler(name: str, labels, batch_size: int, seed: int,
            options: Mapping[str, Any] | None = None, domains=None) -> BatchFn:
  """`batch(step) -> int64[batch_size]`, positions into the training rows.

  Args:
    name: `config.train.sampler`, one of `SAMPLERS`.
    labels: the training rows' labels, int[n] or multi-hot [n, classes].
    batch_size: `config.train.batch_size` (the global batch).
    seed: `config.seed`.
    options: `config.train.sampler_options` (a mapping; None values = not given).
    domains: int[n] domain ids of the training rows (`Prepared.domain_ids`), read
      by `domains` only (None: one domain).

  Everything is checked now, once: a bad name, an option not of this sampler,
  sizes that do not add up, or too few classes with enough images raise
  `DataError` naming the config key. The batch of step s is a pure function of
  (labels, batch_size, seed, s, options), the same from a freshly built sampler.
  """
  if name not in SAMPLERS:
    raise DataError(f"unknown {_NAME}={name!r}; known: {', '.join(SAMPLERS)}")
  given = _options(name, options)
  batch_size = _int(batch_size, _BATCH, 1)
  seed = _int(seed, "config.seed", 0)
  given = {key: _int(v, f"{_OPTS}.{key}", 1) for key, v in given.items()}
  if name == "domains":
    given["domains"] = domains
  return _BUILD[name](labels, batch_size, seed, **given)


def uniform_batch(labels, batch_size: int, seed: int, step: int) -> np.ndarray:
  """The `uniform` batch of `step`: `batch_at(arange(len(labels)), ...)`."""
  return sampler("uniform", labels, batch_size, seed)(step)


def two_class_batch(labels, batch_size: int, seed: int, step: int, *,
                    n: int | None = None) -> np.ndarray:
  """The `two_class` batch of `step`: n images of one class, then the rest of
  another (n None: 2/3 of the batch, rounded)."""
  return sampler("two_class", labels, batch_size, seed, {"n": n})(step)


def pk_batch(labels, batch_size: int, seed: int, step: int, *,
             k: int | None = None) -> np.ndarray:
  """The `pk` batch of `step`: P = batch_size // k classes x k images (k None: 4)."""
  return sampler("pk", labels, batch_size, seed, {"k": k})(step)
