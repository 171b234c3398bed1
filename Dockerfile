# syntax=docker/dockerfile:1
#
# The crmauthz image: a static binary (CGO_ENABLED=0, -trimpath) built by `make build`, on an
# empty base (scratch), run as the non-root user 65532. Build it with `make image`
# (IMAGE=crmauthz IMAGE_TAG=<version>), then tag and push it to the repository you deploy from
# and set the chart's image.repository to it.
#
# The test tools/chart TestStandaloneDefaultRunsTheBinary reads this file: it runs the binary
# with the ENV below, the ENTRYPOINT and the chart's arguments; TestStaticBinary checks that
# `make build` gives a static executable.

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION} AS build
WORKDIR /src
# Modules first, so that a change of the sources reuses the downloaded modules.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# The version shown by `crmauthz version` and /v1/status (.dockerignore keeps .git out).
ARG VERSION=dev
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    make build VERSION=${VERSION} \
    && ./bin/crmauthz version \
    && mkdir -p /out/data \
    && cp bin/crmauthz /out/crmauthz

FROM scratch
COPY --from=build /out/crmauthz /usr/local/bin/crmauthz
# The index directory, writable by the user below; the chart mounts an emptyDir or a
# PersistentVolumeClaim over it.
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
WORKDIR /data
VOLUME ["/data"]
# In a container the listeners must be reachable from outside it: bind every interface (the
# binary's defaults are loopback). Command-line flags win over these (the chart passes its own).
ENV CRMAUTHZ_ADDR=0.0.0.0:8181
ENV CRMAUTHZ_ADMIN_ADDR=0.0.0.0:8282
ENV CRMAUTHZ_DATA_DIR=/data
EXPOSE 8181 8282
ENTRYPOINT ["/usr/local/bin/crmauthz"]
CMD ["serve"]
