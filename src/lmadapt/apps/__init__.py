"""Applications on adapted models: each one folder with its CLI group, config dataclasses, a router on the shared
service, its storage and its benchmark. They use lmadapt's public API and the service parts only."""
