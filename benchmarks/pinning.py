"""Thread pinning shared by the benchmarks: call before numpy, jax or faiss is imported.

    import pinning
    pinning.pin_threads(ARGS.threads)   # then import jax, numpy, faiss

Pins the process to the first `n` cores and gives OpenMP, BLAS and XLA:CPU that
many threads (their pools are sized when they start). Imports only `os`.
"""

import os


def pin_threads(n: int) -> None:
  os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:n])
  for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(n)
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_cpu_multi_thread_eigen={str(n > 1).lower()}"
                             f" intra_op_parallelism_threads={n}")


def faiss_or_none(threads: int):
  """faiss with `threads` OpenMP threads, or None when it is not installed."""
  try:
    import faiss  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  faiss.omp_set_num_threads(threads)
  return faiss
