# syntax=docker/dockerfile:1
# callback-router: one static binary for both the manager and the receiver.
# Build with `make docker-build IMG=<registry>/callback-router:<tag>` (needs a container
# engine: Docker, Podman or BuildKit; none is needed for anything else in this repository).

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG TARGETOS
ARG TARGETARCH
WORKDIR /src
# Dependencies first, so that a source change does not download modules again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags="-s -w" -o /out/callback-router . && \
    mkdir -p /out/spool

# distroless/static: no shell, no package manager, CA certificates and tzdata included
# (https backends need the CAs). The :nonroot tag runs as uid/gid 65532.
FROM gcr.io/distroless/static:nonroot
COPY --from=build /out/callback-router /callback-router
# The receiver's spool directory, writable by the non-root user for `docker run`; in a
# cluster the manager mounts an emptyDir over it.
COPY --from=build --chown=65532:65532 /out/spool /var/spool/callback-router
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/callback-router"]
