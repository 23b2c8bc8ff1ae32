"""Published facts of the paper (Benarab, arXiv 2106.12479) and of a reproduction."""

BACKBONES = ("alexnet", "wide_resnet50_2", "resnext50_32x4d", "shufflenet_v2_x1_0", "vgg16")

# (head, classifier) Adam learning rates; ResNet-18/50 take the wide ResNet's
LEARNING_RATES = {
    "alexnet": {"head": 1e-5, "classifier": 5e-4},
    "wide_resnet50_2": {"head": 5e-5, "classifier": 1e-4},
    "resnext50_32x4d": {"head": 5e-5, "classifier": 1e-3},
    "shufflenet_v2_x1_0": {"head": 5e-4, "classifier": 1e-3},
    "vgg16": {"head": 5e-5, "classifier": 1e-3},
    "resnet18": {"head": 5e-5, "classifier": 1e-4},
    "resnet50": {"head": 5e-5, "classifier": 1e-4},
    # not the paper's: ShuffleNet's, the other light network with a slice of stride 8
    "mobilenet_v2": {"head": 5e-4, "classifier": 1e-3},
}

# validation accuracy on IMDB: the paper's table (each +-0.01) and a published reproduction's
PAPER_ACCURACY = {
    "alexnet": 0.87,
    "wide_resnet50_2": 0.85,
    "resnext50_32x4d": 0.85,
    "shufflenet_v2_x1_0": 0.86,
    "vgg16": 0.86,
}
PAPER_ACCURACY_ERROR = 0.01
REPRODUCTION_ACCURACY = {
    "alexnet": 0.801,
    "wide_resnet50_2": 0.824,
    "resnext50_32x4d": 0.819,
    "shufflenet_v2_x1_0": 0.812,
    "vgg16": 0.813,
}

NORMALISATION_EPS = 1e-8  # the paper's Z-normalisation (x - mu) / (sigma + eps)
