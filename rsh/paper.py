"""The published numbers rsh reproduces, as printed in the sources
(`../shared/spec/sources/`), keyed by table: `rsh.reproduce` prints ours beside them."""

import numpy as np

# The thesis's numbers (ch. 4 and 5), as published.
PAPER = {
    "5.7": {  # MAP@100
        ("dhnn_ms", "binary"): {32: 0.2752, 64: 0.2842, 128: 0.2720},
        ("gan_rgb", "nonbinary"): {32: 0.5184, 64: 0.5287, 128: 0.5480},
        ("gan_ms", "nonbinary"): {32: 0.5655, 64: 0.5915, 128: 0.6002},
        ("uahm", "nonbinary"): {32: 0.6510, 64: 0.6575, 128: 0.6810},
        ("uahm", "binary"): {32: 0.6470, 64: 0.6556, 128: 0.6785},
    },
    "5.8": {  # precision@20
        ("dhnn_ms", "binary"): {32: 0.1542, 64: 0.1808, 128: 0.2283},
        ("gan_rgb", "nonbinary"): {32: 0.5113, 64: 0.5217, 128: 0.5398},
        ("gan_ms", "nonbinary"): {32: 0.5603, 64: 0.5221, 128: 0.5980},
        ("uahm", "nonbinary"): {32: 0.6393, 64: 0.6452, 128: 0.6734},
        ("uahm", "binary"): {32: 0.6367, 64: 0.6432, 128: 0.6705},
    },
    "5.9": {  # class-wise MAP@100, UAHM binary, 128 bits
        "AnnualCrop": 0.6377, "Forest": 0.9245, "HerbaceousVegetation": 0.5730,
        "Highway": 0.2713, "Industrial": 0.8887, "Pasture": 0.6557, "PermanentCrop": 0.5816,
        "Residential": 0.5551, "River": 0.7103, "SeaLake": 0.9873,
    },
    "4.1": {  # IS / FID of 5,000 generated images (Inception classifiers on ImageNet)
        "cdcgan": (2.3521, 188.9619), "acgan": (2.6371, 170.8508),
    },
    "4.3": {  # MAP@100, leave-one-out on 1,000 test images, 16 / 32 / 64 bits
        "real": {16: 0.9338, 32: 0.9357, 64: 0.9334},
        "cdcgan": {16: 0.9189, 32: 0.9387, 64: 0.9372},
        "acgan": {16: 0.9217, 32: 0.9404, 64: 0.9313},
    },
    "4.4": {  # class-wise MAP@100 at 32 bits (EuroSAT class order), and all classes
        "real": (0.9844, 0.9678, 0.9033, 0.8110, 0.9984, 0.9665, 0.8893, 0.9991, 0.8566,
                 0.9801, 0.9357),
        "cdcgan": (0.9519, 0.9690, 0.9123, 0.8542, 0.9676, 0.9427, 0.8854, 0.9719, 0.9415,
                   0.9705, 0.9387),  # Sea Lake printed "0.0.9705"
        "acgan": (0.9591, 0.9674, 0.9015, 0.8378, 0.9895, 0.9636, 0.8995, 0.9805, 0.9140,
                  0.9908, 0.9404),
    },
    "4.5": {  # Table 4.4's relative change against real only, in %
        "cdcgan": (-3.29, 0.12, 0.99, 5.32, -1.09, -2.46, -0.44, -2.72, 9.92, -0.98, 0.33),
        "acgan": (-2.56, -0.04, -0.20, 3.29, -0.89, -0.30, 1.15, -1.86, 6.71, 1.09, 0.51),
    },
    "5.6": {  # SSM quality on 5,000 training images
        "ResNet-v2": (0.8761, 0.0331), "Inception-v3": (0.8899, 0.1626),
        "raw colour": (0.8884, 0.0853), "local histogram": (0.8894, 0.1071),
        "Inception-v3 + local histogram": (0.8948, 0.1628),
    },
}

ROW_NAMES = {("dhnn_ms", "binary"): "DHNN-MS (bin)", ("gan_rgb", "nonbinary"): "GAN-RGB (non-bin)",
             ("gan_ms", "nonbinary"): "GAN-MS (non-bin)", ("uahm", "nonbinary"): "UAHM (non-bin)",
             ("uahm", "binary"): "UAHM (bin)"}


def cell(values: list[float]) -> str:
  """One table cell of ours: the value, or mean ± std over seeds; "—" for none."""
  if len(values) < 2:
    return f"{values[0]:.4f}" if values else "—"
  return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"
