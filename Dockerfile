# The meshfed image: one static binary, every component (the first argument picks the
# subcommand: gateway, federation, trust rotate, ...). `make image` builds it.
# The build stage is the recipe deploy/image_test.go checks (CGO_ENABLED=0: a static binary
# that runs on a base without libc); the runtime base has no shell and runs as UID 65532,
# what the Helm chart's and the kustomize base's securityContext expect.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.Version=${VERSION}" -o /out/meshfed ./cmd/meshfed

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/meshfed /meshfed
USER 65532:65532
# gateway TLS, gateway admin, federation admin, federation xDS (every one a flag).
EXPOSE 15443 15000 15001 15010
ENTRYPOINT ["/meshfed"]
