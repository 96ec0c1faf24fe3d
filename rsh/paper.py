"""The published numbers rsh reproduces, as printed in the sources
(`../shared/spec/sources/`), keyed by table: `rsh.reproduce` prints ours beside them."""

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
    "5.6": {  # SSM quality on 5,000 training images
        "ResNet-v2": (0.8761, 0.0331), "Inception-v3": (0.8899, 0.1626),
        "raw colour": (0.8884, 0.0853), "local histogram": (0.8894, 0.1071),
        "Inception-v3 + local histogram": (0.8948, 0.1628),
    },
}

ROW_NAMES = {("dhnn_ms", "binary"): "DHNN-MS (bin)", ("gan_rgb", "nonbinary"): "GAN-RGB (non-bin)",
             ("gan_ms", "nonbinary"): "GAN-MS (non-bin)", ("uahm", "nonbinary"): "UAHM (non-bin)",
             ("uahm", "binary"): "UAHM (bin)"}
