"""Fill the Hugging Face and torch caches on a machine with network (a cluster's login node), so
compute jobs can run with HF_HUB_OFFLINE=1."""

from __future__ import annotations

import logging

from textvision.errors import InputError

log = logging.getLogger(__name__)


def prefetch(models=(), datasets=(), backbones=()) -> None:
    from textvision.backbones import imagenet_state_dict, parse_backbone
    from textvision.embed import resolve_model

    for name in models:
        log.info("encoder %s: %s", name, resolve_model(name))
    for name in datasets:
        if not name.startswith("hf:"):
            continue  # local files need no fetching
        import datasets as hf_datasets

        try:
            hf_datasets.load_dataset(name[3:])
        except Exception as err:  # noqa: BLE001
            raise InputError(f"{name}: cannot download ({type(err).__name__}: {err})") from None
        log.info("dataset %s cached", name)
    for name in backbones:
        arch = parse_backbone(name)[0]
        imagenet_state_dict(arch)
        log.info("ImageNet weights of %s cached", arch)
