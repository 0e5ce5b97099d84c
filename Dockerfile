# sallyport's container image: a static binary on a distroless, non-root base.
#   make docker-build IMG=registry.example/sallyport:v0.1.0
# The builder's Go matches go.mod's go directive (1.26).
FROM golang:1.26 AS builder
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
WORKDIR /workspace

# Modules first, so a change of code does not download them again.
COPY go.mod go.sum ./
RUN go mod download

COPY api/ api/
COPY cmd/ cmd/
COPY controllers/ controllers/
COPY internal/ internal/
COPY webhook/ webhook/
# The CRDs are embedded (config/crd/embed.go) for validating policy files offline.
COPY config/crd/ config/crd/

# The same build as `make build`.
RUN CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} \
	go build -trimpath \
	-ldflags "-X github.com/sallyport/sallyport/internal/version.Version=${VERSION}" \
	-o /sallyport ./cmd/sallyport

FROM gcr.io/distroless/static:nonroot
COPY --from=builder /sallyport /sallyport
USER 65532:65532
ENTRYPOINT ["/sallyport"]
