"""Deprecated: the cross-modal loss terms moved into the `rsh.losses` package.

`rsh.losses.pairwise` (label_similarity, pairwise_similarity_loss),
`rsh.losses.hashing` (quantisation_loss, bit_balance_loss),
`rsh.losses.contrastive` (nt_xent_loss, infonce_loss, angular_loss,
intra_topk_loss) and `rsh.losses.adversarial` (gradient_penalty_loss); all of
them are re-exported by `rsh.losses`. This module re-exports them for one
release and warns when imported.
"""

import warnings

from rsh.losses import (Array, angular_loss, bit_balance_loss, gradient_penalty_loss,
                        infonce_loss, intra_topk_loss, label_similarity, nt_xent_loss,
                        pairwise_similarity_loss, quantisation_loss)

warnings.warn("rsh.losses_crossmodal is deprecated; import the loss terms from rsh.losses",
              DeprecationWarning, stacklevel=2)

__all__ = ["Array", "angular_loss", "bit_balance_loss", "gradient_penalty_loss", "infonce_loss",
           "intra_topk_loss", "label_similarity", "nt_xent_loss", "pairwise_similarity_loss",
           "quantisation_loss"]
