"""The network: a frozen ImageNet slice from the registry -> conv head -> dense classifier."""
