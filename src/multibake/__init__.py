"""multibake: build families of multi-arch container images with docker buildx bake."""

__version__ = "0.1.0"
