"""textvision: classify text with pretrained vision models through DeepInsight images."""

__version__ = "0.1.0"
