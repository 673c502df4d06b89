# nftredir init-container image.
#
# Programs a pod network namespace's nftables ruleset through libnftables'
# JSON API (Debian's python3-nftables). Runs as UID 0 with only CAP_NET_ADMIN
# on a read-only root filesystem: nothing in here writes at runtime.
#
#   podman build -t nftredir .                       # from debian:bookworm-slim
#   podman build --build-arg BASE_IMAGE=localhost/bookworm-minbase -t nftredir .
#
# Behind a TLS-intercepting proxy, mount its CA for the build only (it is
# never copied into the image):
#   podman build -v /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro \
#       --build-arg PIP_CERT=/run/host-ca.crt -t nftredir .
#
# scripts/test-image builds and exercises this image for real.

ARG BASE_IMAGE=debian:bookworm-slim

# Shared by both stages: keep docs, man pages and translations out of dpkg
# installs (copyright files stay).
FROM ${BASE_IMAGE} AS debbase
RUN printf '%s\n' \
        'path-exclude=/usr/share/doc/*' \
        'path-include=/usr/share/doc/*/copyright' \
        'path-exclude=/usr/share/man/*' \
        'path-exclude=/usr/share/info/*' \
        'path-exclude=/usr/share/locale/*' \
        'path-exclude=/usr/share/lintian/*' \
        > /etc/dpkg/dpkg.cfg.d/90nftredir-nodoc

# ---------------------------------------------------------------- builder --
FROM debbase AS builder
ARG PIP_CERT=""
ARG DEBIAN_FRONTEND=noninteractive
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_NO_INPUT=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-nftables \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*

# --system-site-packages: the venv must see Debian's python3-nftables.
RUN /usr/bin/python3 -m venv --system-site-packages /opt/nftredir

COPY pyproject.toml README.md /src/
COPY nftredir/ /src/nftredir/
COPY templates/ /src/templates/

# pip gets --cert only when PIP_CERT is set (the file is a build-time mount);
# it stays exported too, since pip's isolated build-dependency install reads
# only the environment, not the outer command line.
# Bytecode is compiled here, validated by hash rather than mtime, so it stays
# valid whatever the COPY below does to mtimes and nothing is written at runtime.
# typer requires rich (and through it pygments and markdown-it, 13 MB) for rich help, which
# nftredir turns off (rich_markup_mode=None, no pretty exceptions): they are never imported, so
# they are removed, and TYPER_USE_RICH=0 below keeps typer from looking for them.
# Rendering each format once stores the compiled templates (keyed by their source's
# hash) in templates/__pycache__, so the read-only init container never compiles them.
ARG RICH="rich pygments markdown-it-py mdurl"
RUN set -eu; \
    if [ -n "${PIP_CERT:-}" ]; then export PIP_CERT; set -- --cert "$PIP_CERT"; \
    else unset PIP_CERT; set --; fi; \
    /opt/nftredir/bin/pip install "$@" --no-compile /src; \
    /opt/nftredir/bin/pip uninstall -y pip setuptools $RICH >/dev/null; \
    rm -f /opt/nftredir/bin/pip* /opt/nftredir/bin/Activate.ps1 /opt/nftredir/bin/activate.*sh; \
    find /opt/nftredir -depth -name __pycache__ -type d -exec rm -rf {} +; \
    /opt/nftredir/bin/python -m compileall -q -j 0 \
        --invalidation-mode unchecked-hash /opt/nftredir/lib; \
    /opt/nftredir/bin/python -c 'import nftables, nftredir.cli'; \
    ! /opt/nftredir/bin/python -c 'import rich' 2>/dev/null; \
    for format in nft json iptables; do /opt/nftredir/bin/nftredir render --format "$format" >/dev/null; done; \
    test "$(ls /opt/nftredir/lib/python3*/site-packages/nftredir/templates/__pycache__ | wc -l)" -eq 4

# ------------------------------------------------------------------ final --
FROM debbase
ARG DEBIAN_FRONTEND=noninteractive
# python3-nftables pulls python3 and libnftables1; no iptables, no compilers.
# netbase gives /etc/protocols and /etc/services: without them libnftables lists
# `meta l4proto 6` instead of `tcp`, and `nftredir diff` sees drift.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-nftables netbase \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/cache/debconf/*-old \
           /var/log/apt /var/log/dpkg.log /var/log/alternatives.log \
 && python3 -c 'import nftables; nftables.Nftables()' \
 && ! command -v iptables

COPY --from=builder /opt/nftredir /opt/nftredir

ENV PATH=/opt/nftredir/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TYPER_USE_RICH=0

# FSM's injector runs `/bin/sh -c "iptables-restore --noflush <<EOF ... EOF"`: this wrapper is
# that iptables-restore (nftredir iptables-restore; see deploy/fsm.md). Still no real iptables.
COPY image/iptables-restore /usr/local/bin/iptables-restore

RUN nftredir --help >/dev/null \
 && [ "$(command -v iptables-restore)" = /usr/local/bin/iptables-restore ] \
 && [ -x /usr/local/bin/iptables-restore ] && [ -x /bin/sh ]

LABEL org.opencontainers.image.title="nftredir" \
      org.opencontainers.image.description="Init container programming a pod's nftables redirection ruleset (table inet nftredir) via libnftables"

# Root inside the pod's netns; give it CAP_NET_ADMIN only (see deploy/pod.yaml).
USER 0:0
ENTRYPOINT ["nftredir"]
CMD ["apply"]
