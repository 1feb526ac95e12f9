# syntax=docker/dockerfile:1
# Multi-stage build: a static holdfast binary on a distroless base, run as a
# non-root user. Build: docker build -t holdfast .
#
# The two base images are build arguments whose defaults are the ones to
# use; scripts/image.sh passes local stand-ins where no registry can be
# reached (docs/operations.md, "Container image").
ARG BUILD_IMAGE=golang:1.26
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM ${BUILD_IMAGE} AS build
WORKDIR /src
COPY go.mod go.sum ./
# The module download honours a proxy given at build time:
# docker build --build-arg GOPROXY=https://proxy.example.com -t holdfast .
ARG GOPROXY
ARG GOFLAGS
RUN go mod download
COPY . .
# The version -version prints and holdfast_build_info carries:
# docker build --build-arg VERSION=v1.2.3 -t holdfast .
ARG VERSION=""
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" -o /out/holdfast . \
 && /out/holdfast -check-config -config proxy.yaml

FROM ${RUNTIME_IMAGE}
COPY --from=build /out/holdfast /usr/local/bin/holdfast
COPY proxy.yaml /etc/holdfast/proxy.yaml
# 65532 is distroless's "nonroot" user. The Kubernetes manifests
# (deploy/kubernetes) run as the same user, declare the EXPOSEd ports and pass
# the CMD's arguments; their test (deploy/kubernetes/validate) checks it.
USER 65532:65532
# Client listener and operational (metrics/health) listener. The shipped
# proxy.yaml binds 127.0.0.1; in a container mount a config that sets
# listen: "0.0.0.0:18790" and metrics.listen: "0.0.0.0:9464" (docs/operations.md).
EXPOSE 18790 9464
ENTRYPOINT ["/usr/local/bin/holdfast"]
CMD ["-config", "/etc/holdfast/proxy.yaml"]
