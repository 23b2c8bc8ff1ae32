"""Fill the Hugging Face and torch caches on a machine with network (a cluster's login node), so
compute jobs can run with HF_HUB_OFFLINE=1."""

from __future__ import annotations

import logging

from textvision.config.settings import PrefetchSettings
from textvision.core.backbones import parse_backbone
from textvision.core.errors import InputError
from textvision.embed.encoder import resolve_model
from textvision.models.network import imagenet_state_dict

log = logging.getLogger(__name__)


def prefetch(settings: PrefetchSettings) -> None:
    """Fetch the encoder, an `hf:` dataset and the ImageNet weights of the backbones that use
    them (local files need no fetching)."""

    log.info("encoder %s: %s", settings.model, resolve_model(settings.model))
    name = settings.source
    if name.startswith("hf:"):
        import datasets as hf_datasets

        try:
            hf_datasets.load_dataset(name[3:])
        except Exception as err:  # noqa: BLE001
            raise InputError(f"{name}: cannot download ({type(err).__name__}: {err})") from err
        log.info("dataset %s cached", name)
    for name in settings.backbones:
        arch = parse_backbone(name)[0]
        imagenet_state_dict(arch)
        log.info("ImageNet weights of %s cached", arch)
