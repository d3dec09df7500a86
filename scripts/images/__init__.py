"""Building the platform's images with the tools Debian ships (podman, buildah, debootstrap).

`scripts/build-images` is the command; `base` makes the `debian:bookworm-slim` base image
locally (nothing is pulled), `build` builds and tags the gateway and session images."""
