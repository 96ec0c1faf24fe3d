"""Unsupervised semantic similarity matrix (SSM) of a training set (UAHM, thesis §5.1.4).

    feats = spectral.fuse(spectral.local_histogram(images, 32, 4), spatial, eta=6.0)
    packed = two_stage_knn(feats, k1=500, k2=300)          # uint8[n, ceil(n / 8)]
    batch_similarity = ssm_rows(packed, batch_idx)          # int8[b, b] of +-1
    ssm_quality(packed, labels)                             # {"accuracy", "iou"}

or all at once with `build_ssm`. The spectral features and their fusion (Table
5.1, eq. 5.9) are `rsh.spectral`'s. One job per module:

- `rsh.similarity.knn`: the two-stage kNN (`two_stage_knn`, `cosine_knn`),
  its stage-2 AND-popcount kernel, and `scale_k`.
- `rsh.similarity.packed`: packed-bit rows, the top-k selections that write
  them (`top_k_packed`, `top_k_scores_packed`) and reading them back
  (`unpack_ssm`, `ssm_rows`).
- `rsh.similarity.quality`: `ssm_quality` against the labels.
- `rsh.similarity.build`: `build_ssm`, features to SSM.

Definitions, with the thesis lines (`spec/sources/uahm_thesis.txt`) they come from:

- Stage 1 (eq. 5.10, l.1107-1110): S1[i, j] = +1 if x_j is among the K1 nearest
  of x_i by cosine distance.
- Stage 2 (eq. 5.11, l.1112-1119): the distance of i and j is the Hamming
  distance of the rows S1[i] and S1[j] (how many neighbours they do not
  share), = 2 * K1 - 2 * |N_i & N_j|; S2[i, j] = +1 if j is among the K2
  nearest of i under it, i.e. the K2 largest overlaps |N_i & N_j|.
- S = S1 AND S2 (eq. 5.12, l.1121-1124).
- Quality (eq. 5.16, 5.17, l.1246-1259): accuracy sums over every (i, j),
  diagonal included, and divides by N^2; IoU = |{S=1} & {GT=1}| / |{S=1} | {GT=1}|
  with GT[i, j] = +1 when i and j share a label (so GT's diagonal is +1).

Choices the thesis leaves open:

- A point is its own nearest neighbour in both stages (cosine distance 0,
  Hamming distance 0): row i of S1 holds i and K1 - 1 others, row i of S2 holds
  i and K2 - 1 others, so S[i, i] = +1, which agrees with GT's diagonal that
  eq. 5.16 counts. Self is put first explicitly, so exact duplicates cannot
  push a point out of its own neighbour set.
- Ties are broken by index: among equally distant points the lower index
  wins (`rsh.ranking`'s top-k). Stage 2 distances are small integers, so ties
  there are the rule, not the exception, and this makes S a deterministic
  function of the features.
- S is not symmetric: j may be among the neighbours of i without i being
  among those of j. `ssm_rows` returns S[idx][:, idx] as it is, row = anchor.
- A zero feature vector has cosine 0 with everything.

K1 = 500 and K2 = 300 are the thesis' values for 5,000 training images
(l.1226, l.1291). For another training-set size callers pass
`scale_k(500, n)` and `scale_k(300, n)`, which keep each image's neighbours
the same share of the set (10 % and 6 %).

Scale: nothing N x N is ever held as float. Stage 1 scores a block of rows
against all points (BLAS, float32) and keeps a boolean top-K1 mask, stored
packed (N^2 / 8 bytes). Stage 2 needs every overlap |N_i & N_j| = (A A^T)_ij
with A the 0/1 matrix of S1: it is popcount(row_i AND row_j) over the packed
rows as 32-bit words, counted exactly by a jitted XLA loop in square blocks,
only the upper triangle of blocks since A A^T is symmetric; the mirrored
blocks wait as uint16 until their row block comes (at most N^2 / 4 of them,
365 MB at N = 27,000). Each row block's K2 largest overlaps are then picked by
counting (overlaps are integers in 0..K1), never by sorting. At N = 27,000
(K1 = 2,700, K2 = 1,620) on 2 CPU cores the first stage's matrix products are
most of the time: `benchmarks/ssm.py` prints each stage's seconds.
"""

from rsh.similarity.build import build_ssm
from rsh.similarity.knn import cosine_knn, scale_k, two_stage_knn
from rsh.similarity.packed import ssm_rows, unpack_ssm
from rsh.similarity.quality import ssm_quality

__all__ = [
    "scale_k", "cosine_knn", "two_stage_knn", "unpack_ssm", "ssm_rows", "ssm_quality", "build_ssm",
]
